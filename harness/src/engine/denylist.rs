//! The deny-list now lives in the wire layer, where the connection's send
//! guard uses it on the byte stream: [`crate::wire::denylist`].

pub use crate::wire::denylist::*;
