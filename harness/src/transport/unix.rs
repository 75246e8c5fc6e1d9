//! A unix socket the agent listens on (qemu-ga `-m unix-listen -p PATH`).
//!
//! The path lives in a fresh temporary directory, removed with the transport.
//! Each agent instance needs a new connection: unread output of a closed
//! connection does not survive, but the agent's parser state does (qemu-ga
//! keeps one parser for the process, protocol.md §2).

use super::Duplex;
use std::io;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

#[derive(Debug)]
pub struct UnixListen {
    _dir: TempDir,
    path: PathBuf,
}

impl UnixListen {
    pub fn new() -> io::Result<UnixListen> {
        let dir = tempfile::Builder::new().prefix("qga-harness-").tempdir()?;
        let path = dir.path().join("agent.sock");
        Ok(UnixListen { _dir: dir, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One attempt; the caller retries, bounded, while the agent starts.
    pub(super) async fn connect(&self) -> io::Result<Duplex> {
        Ok(Duplex::socket(tokio::net::UnixStream::connect(&self.path).await?))
    }
}
