//! Tollgate edge (issue 3).
