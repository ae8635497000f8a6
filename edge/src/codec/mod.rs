//! Wire codecs shared by the client surfaces and the providers.

pub mod sse;
pub mod usage;
