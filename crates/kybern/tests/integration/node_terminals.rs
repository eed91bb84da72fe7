//! `kubectl run -i` and `kubectl run -it` on a `kybern up` node (as root,
//! real runc): a `stdinOnce` container's input closes when kubectl's does,
//! a `tty` container runs on a terminal sized as kubectl's, and kubectl
//! returns the container's exit code.

use crate::common::cli::Cli;
use crate::common::node::NodeCluster;
use crate::common::pods::wait_gone;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Api;

/// Waits for `child` at most `secs` seconds; kills it and fails the test
/// if it runs longer (a container that never sees its input end would hang
/// kubectl forever).
fn finish_within(child: Child, secs: u64) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out.expect("wait for kubectl"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            panic!("kubectl still running after {secs} s");
        }
    }
}

/// `kubectl run NAME` of the node's busybox, with `flags`, running `command`.
fn run_args<'a>(name: &'a str, flags: &[&'a str], command: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        name,
        "--restart=Never",
        "--image=busybox",
        "--image-pull-policy=Never",
    ];
    args.extend(flags);
    args.push("--");
    args.extend(command);
    args
}

#[tokio::test]
async fn kubectl_run_i_closes_the_input_when_kubectl_does() {
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    let kubectl = Cli::kubectl_for(&cluster);
    // `wc -l` ends only at the end of its input: kubectl's stdin reaching
    // its end must close the container's (`stdinOnce`).
    let args = run_args("counter", &["-i", "--rm"], &["sh", "-c", "wc -l; exit 3"]);
    let mut child = kubectl
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl run");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"one\ntwo\nthree\n").expect("write stdin");
    drop(stdin);
    let out = finish_within(child, 120);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stdout.lines().next().map(str::trim),
        Some("3"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    // kubectl run -i returns the container's exit code.
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    wait_gone(&Api::namespaced(client, "default"), "counter").await;
}

/// A pseudo-terminal of `rows` × `cols`: its controlling side, and its
/// terminal side for kubectl to use as its own.
fn terminal(rows: u16, cols: u16) -> (OwnedFd, OwnedFd) {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::OpenptFlags;
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
    rustix::pty::grantpt(&master).expect("grantpt");
    rustix::pty::unlockpt(&master).expect("unlockpt");
    let name = rustix::pty::ptsname(&master, Vec::new()).expect("ptsname");
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("open the terminal");
    let size = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(&master, size).expect("size the terminal");
    (master, slave)
}

/// What kubectl has written to its terminal so far.
#[derive(Clone, Default)]
struct Screen(Arc<Mutex<Vec<u8>>>);

impl Screen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("screen")).into_owned()
    }

    /// Waits up to `secs` seconds for `what` to show; whether it did.
    fn shows(&self, what: &str, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.text().contains(what) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

#[tokio::test]
async fn kubectl_run_it_gives_the_container_a_terminal() {
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    let kubectl = Cli::kubectl_for(&cluster);
    let (master, slave) = terminal(33, 101);
    let args = run_args("shell", &["-it", "--rm"], &["sh"]);
    let child = kubectl
        .command(&args)
        .stdin(Stdio::from(slave.try_clone().expect("dup")))
        .stdout(Stdio::from(slave.try_clone().expect("dup")))
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("kubectl run -it");
    let screen = Screen::default();
    let mut keyboard = std::fs::File::from(master);
    let mut display = keyboard.try_clone().expect("dup");
    let seen = screen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // Ends with EIO once kubectl, the terminal's last user, is gone.
        while let Ok(n) = display.read(&mut buf) {
            if n == 0 {
                return;
            }
            seen.0.lock().expect("screen").extend_from_slice(&buf[..n]);
        }
    });
    assert!(
        screen.shows("If you don't see a command prompt", 120),
        "kubectl did not attach: {}",
        screen.text()
    );
    // Keys typed before kubectl has switched its terminal to raw mode and
    // opened the session may be lost: type until the shell answers. The
    // answer differs from the echoed command.
    let mut answered = false;
    for _ in 0..30 {
        keyboard.write_all(b"echo ab\"\"cd\r").expect("type");
        if screen.shows("abcd", 2) {
            answered = true;
            break;
        }
    }
    assert!(answered, "the shell did not answer: {}", screen.text());
    // The shell runs on a terminal, of the size of kubectl's.
    keyboard.write_all(b"tty; stty size\r").expect("type");
    assert!(
        screen.shows("/dev/pts/", 30) && screen.shows("33 101", 30),
        "{}",
        screen.text()
    );
    keyboard.write_all(b"exit 5\r").expect("type");
    let out = finish_within(child, 120);
    assert_eq!(out.status.code(), Some(5), "{}", screen.text());
    wait_gone(&Api::namespaced(client, "default"), "shell").await;
}
