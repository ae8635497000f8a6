//! Tollgate usage aggregator (issue 4).
