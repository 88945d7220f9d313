//! A throwaway `redis-server` for tests: loopback only, a free port, a temporary directory, no
//! persistence. Without the binary, tests skip (locally) or fail (when `CI` is set).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Debian package that provides the binary, for messages.
const PACKAGE: &str = "redis-server";

/// A `redis-server` process started for a test; killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one, or returns `None` (after saying why on stderr) when `redis-server` is not
    /// installed and `CI` is not set. Under `CI` a missing binary panics, naming the package.
    pub fn start() -> Option<Self> {
        if !binary_available() {
            let message = format!(
                "redis-server is not installed: install the Debian package `{PACKAGE}` \
                 (.ci/run does) to run the Redis tests"
            );
            if std::env::var_os("CI").is_some() {
                panic!("{message}");
            }
            eprintln!("skipped: {message}");
            return None;
        }
        let dir = tempfile::tempdir().expect("a temporary directory for redis-server");
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn(port, dir.path()) {
                return Some(Self {
                    child: Some(child),
                    port,
                    dir,
                });
            }
        }
        panic!("redis-server did not start on a free loopback port (5 tries)");
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL): every connection breaks, everything in it is lost.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server cleanly, saving its data first (`SHUTDOWN SAVE`): a [`restart`](Self::restart)
    /// then has every key back, as a server with persistence would.
    pub fn shutdown_saving(&mut self) {
        if let Some(mut child) = self.child.take() {
            let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
            if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                let _ = stream.write_all(b"SHUTDOWN SAVE\r\n");
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while !matches!(child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (after [`stop`](Self::stop): empty; after
    /// [`shutdown_saving`](Self::shutdown_saving): with its keys).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = spawn(self.port, self.dir.path()) {
                self.child = Some(child);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Spawns `redis-server` on `port` and waits (bounded) for it to answer PING.
fn spawn(port: u16, dir: &std::path::Path) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if pings(port) {
            return Some(child);
        }
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn binary_available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

fn pings(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}
