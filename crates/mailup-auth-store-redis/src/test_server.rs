//! A throwaway `redis-server` for tests: loopback only, a free port, a temporary directory, no
//! persistence. Without the binary, tests skip (locally) or fail (when `CI` is set). It can
//! require a password or ACL users ([`RedisServer::start_with_args`]) and serve TLS only
//! ([`RedisServer::start_tls`]).

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
    /// Extra `redis-server` arguments (`--requirepass`, `--user`, the TLS files).
    args: Vec<String>,
    /// Whether the port is a TLS port (and there is no plain one).
    tls: bool,
    /// Files the arguments name, when the server owns them (its certificates).
    files: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// Starts one, or returns `None` (after saying why on stderr) when `redis-server` is not
    /// installed and `CI` is not set. Under `CI` a missing binary panics, naming the package.
    pub fn start() -> Option<Self> {
        Self::start_with_args(Vec::new())
    }

    /// [`start`](Self::start) with extra `redis-server` arguments, e.g.
    /// `["--requirepass", "pw"]` or `["--user", "alice", "on", ">pw", "~*", "&*", "+@all"]`
    /// (redis-server joins the words after an option into its directive).
    pub fn start_with_args(args: Vec<String>) -> Option<Self> {
        Self::start_inner(args, false)
    }

    /// A server that speaks TLS only (`--port 0 --tls-port P`), with this certificate and key
    /// (PEM files) and clients not asked for certificates. `None` as for
    /// [`start`](Self::start), and also (after saying so on stderr) when this `redis-server`
    /// was built without TLS.
    pub fn start_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> Option<Self> {
        let path = |p: &std::path::Path| p.display().to_string();
        let args = vec![
            "--tls-cert-file".into(),
            path(cert),
            "--tls-key-file".into(),
            path(key),
            "--tls-ca-cert-file".into(),
            path(ca),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        Self::start_inner(args, true)
    }

    /// A TLS-only server ([`start_tls`](Self::start_tls)) whose certificate (for
    /// `127.0.0.1`) a private CA made for it signed, and that CA's certificate (PEM), to give
    /// to `tls_root_certificate` / `--store-ca`.
    pub fn start_tls_with_private_ca() -> Option<(Self, String)> {
        let pki = PrivatePki::new();
        let dir = tempfile::tempdir().expect("a temporary directory for the certificates");
        let write = |name: &str, pem: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("a certificate file");
            path
        };
        let mut server = Self::start_tls(
            &write("server.crt", &pki.server_certificate),
            &write("server.key", &pki.server_key),
            &write("ca.crt", &pki.ca_certificate),
        )?;
        // Kept for a restart, which reads them again.
        server.files = Some(dir);
        Some((server, pki.ca_certificate))
    }

    fn start_inner(args: Vec<String>, tls: bool) -> Option<Self> {
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
            if let Some(child) = spawn(port, dir.path(), &args, tls) {
                return Some(Self {
                    child: Some(child),
                    port,
                    dir,
                    args,
                    tls,
                    files: None,
                });
            }
            if tls && !tls_built_in(dir.path()) {
                eprintln!(
                    "skipped: this redis-server was built without TLS support (it refuses \
                     --tls-port); the rediss:// tests need one built with TLS, as Debian's is"
                );
                return None;
            }
        }
        panic!("redis-server did not start on a free loopback port (5 tries)");
    }

    /// `redis://127.0.0.1:<port>/0`, or `rediss://...` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
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
            if let Some(child) = spawn(self.port, self.dir.path(), &self.args, self.tls) {
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

/// Where the server's output goes, in its directory (read to tell why it did not start).
const OUTPUT_FILE: &str = "redis-server.out";

/// A private CA and a server certificate for `127.0.0.1` it signed, made now (PEM).
#[derive(Debug)]
#[non_exhaustive]
pub struct PrivatePki {
    /// The CA's certificate.
    pub ca_certificate: String,
    /// The server's certificate.
    pub server_certificate: String,
    /// The server's private key.
    pub server_key: String,
}

impl PrivatePki {
    /// A new CA and server certificate.
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mailup-auth test CA");
        let ca = ca_params.self_signed(&ca_key).expect("a CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().expect("a server key");
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("server params")
            .signed_by(&server_key, &issuer)
            .expect("a server certificate");
        Self {
            ca_certificate: ca.pem(),
            server_certificate: server.pem(),
            server_key: server_key.serialize_pem(),
        }
    }
}

impl Default for PrivatePki {
    fn default() -> Self {
        Self::new()
    }
}

/// Spawns `redis-server` on `port` and waits (bounded) for it to answer PING (a server that
/// wants a password answers `-NOAUTH`, which will do), or for a TLS one to accept connections.
fn spawn(port: u16, dir: &std::path::Path, args: &[String], tls: bool) -> Option<Child> {
    let port_text = port.to_string();
    let port_args: &[&str] = if tls {
        &["--port", "0", "--tls-port", &port_text]
    } else {
        &["--port", &port_text]
    };
    let output = std::fs::File::create(dir.join(OUTPUT_FILE)).ok()?;
    let mut child = Command::new("redis-server")
        .args(port_args)
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(output.try_clone().ok()?)
        .stderr(output)
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let ready = if tls { accepts(port) } else { pings(port) };
        if ready {
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

/// Whether a redis-server that failed to start did so because it has no TLS support.
fn tls_built_in(dir: &std::path::Path) -> bool {
    let log = std::fs::read_to_string(dir.join(OUTPUT_FILE)).unwrap_or_default();
    !(log.contains("tls-port") && (log.contains("Bad directive") || log.contains("not supported")))
}

fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
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
        && (&answer == b"+PONG\r\n" || &answer == b"-NOAUTH")
}
