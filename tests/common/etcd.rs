//! A real etcd server (Debian's `etcd-server` package) on loopback ports with a scratch data
//! directory, killed on drop, and a loopback TCP proxy in front of it that a test can cut.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::temp_dir::TempDir;

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// A running single-member etcd.
pub struct Etcd {
    child: Child,
    /// `127.0.0.1:PORT` of its client URL.
    pub endpoint: String,
    _dir: TempDir,
}

impl Etcd {
    /// Starts `etcd` (from PATH) and waits until it answers a read.
    pub async fn start() -> Self {
        let dir = TempDir::new("etcd");
        let client = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let child = Command::new("etcd")
            .args([
                "--name",
                "turbomon-test",
                "--data-dir",
                dir.path().join("data").to_str().expect("utf-8 path"),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("turbomon-test={peer}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start etcd (apt-get install etcd-server, or see README): {e}")
            });
        let endpoint = client.trim_start_matches("http://").to_string();
        let etcd = Self {
            child,
            endpoint,
            _dir: dir,
        };
        let probe = turbomon::cluster::EtcdClient::new(
            std::slice::from_ref(&etcd.endpoint),
            Duration::from_secs(1),
        )
        .expect("endpoint");
        for _ in 0..200 {
            if probe.list("/").await.is_ok() {
                return etcd;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("etcd did not answer on {} within 10 s", etcd.endpoint);
    }

    /// A client of this server.
    pub fn client(&self) -> turbomon::cluster::EtcdClient {
        turbomon::cluster::EtcdClient::new(
            std::slice::from_ref(&self.endpoint),
            Duration::from_secs(2),
        )
        .expect("endpoint")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP proxy to `target`: every connection is copied both ways until [`cut`] closes
/// them all and refuses new ones.
///
/// [`cut`]: TcpCut::cut
pub struct TcpCut {
    /// Where to connect instead of the target.
    pub addr: SocketAddr,
    cut: Arc<watch::Sender<bool>>,
}

impl TcpCut {
    /// Starts the proxy on a free loopback port.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (cut, _) = watch::channel(false);
        let cut = Arc::new(cut);
        let accepting = Arc::clone(&cut);
        tokio::spawn(async move {
            let mut stop = accepting.subscribe();
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stop.wait_for(|cut| *cut) => return,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let mut stop = accepting.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = stop.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { addr, cut }
    }

    /// Close every connection and refuse new ones.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }
}
