//! The wire layer: what bytes on a QGA channel mean. Nothing here touches a
//! file descriptor; it works on byte slices handed to it by the connection.
//!
//! - [`sentinel`]: the raw 0xFF byte that delimits a `guest-sync-delimited` reply.
//! - [`framer`]: finds complete JSON values in a byte stream (streaming, not line-based).
//! - [`message`]: requests (serialised through the `qapi` crate) and replies.
//! - [`denylist`]: commands never sent, found in the byte stream.

pub mod denylist;
pub mod framer;
pub mod message;
pub mod sentinel;

pub use framer::{scan, Scan};
pub use message::{Reply, Request};
pub use sentinel::SENTINEL;
