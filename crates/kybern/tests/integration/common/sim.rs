//! Starts `kybern sim` beside a test server.

use std::process::{Child, Command, Stdio};

/// A `kybern sim` child process, killed on drop.
pub struct SimProcess(pub Child);

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `kybern sim` against `server` with extra arguments.
pub fn start(server: &super::Server, args: &[&str]) -> SimProcess {
    SimProcess(
        Command::new(env!("CARGO_BIN_EXE_kybern"))
            .args(["sim", "--kubeconfig"])
            .arg(server.kubeconfig())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kybern sim"),
    )
}
