//! What the tests that run the real binary share.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

/// A running server process, killed when dropped (so a failing test leaves none behind to
/// hold its output open).
pub struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `chunkwise-server` on a free port over `data_dir`, with `extra` arguments;
/// returns the process and its base URL.
pub fn spawn(data_dir: &std::path::Path, extra: &[&str]) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chunkwise-server"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_string();
    let running = Running(child);
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");
    (running, base)
}
