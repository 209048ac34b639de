//! Mutual TLS over real loopback sockets: who is let in, who is refused and with what words,
//! rotation without dropping an open connection, and a silent client blocking no one.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Leaf, TempDir, TestCa, Validity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use turbomon::tls::incoming::{Accept, Refusal, plaintext_incoming, tls_incoming};
use turbomon::tls::{ClientTls, ServerTls, peer_name};

const LOCAL: &[&str] = &["localhost", "127.0.0.1"];

struct Fixture {
    _dir: TempDir,
    ca: TestCa,
    engine: Leaf,
    supervisor: Leaf,
}

fn fixture() -> Fixture {
    let dir = TempDir::new("tls");
    let ca = TestCa::new(dir.path(), "site");
    let engine = ca.leaf("engine1", LOCAL, Validity::Valid);
    let supervisor = ca.leaf("supervisor", &["supervisor"], Validity::Valid);
    Fixture {
        _dir: dir,
        ca,
        engine,
        supervisor,
    }
}

/// A TLS engine port that echoes one line back on every accepted connection, and the refusals it
/// logs.
async fn echo_server(tls: ServerTls) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Refusal>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (refusals_tx, refusals) = mpsc::unbounded_channel();
    let mut incoming = tls_incoming(
        listener,
        tls,
        Accept::new("e1", 1024).with_refusals(refusals_tx),
    );
    tokio::spawn(async move {
        while let Some(Ok(mut stream)) = incoming.next().await {
            tokio::spawn(async move {
                let name = peer_name(
                    stream
                        .get_ref()
                        .get_ref()
                        .1
                        .peer_certificates()
                        .unwrap_or(&[]),
                );
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    let reply = format!("{}:{}", name.as_deref().unwrap_or("?"), n);
                    if stream.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (address, refusals)
}

async fn next_refusal(refusals: &mut mpsc::UnboundedReceiver<Refusal>) -> String {
    tokio::time::timeout(Duration::from_secs(15), refusals.recv())
        .await
        .expect("the engine logs a refusal")
        .expect("open")
        .reason
}

/// Connects with `client`, sends "ping" and returns the reply, or the first error's words.
async fn exchange(
    client: &ClientTls,
    address: std::net::SocketAddr,
    name: &str,
) -> Result<String, String> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let mut tls = client.connect(tcp, name).await.map_err(|e| e.reason)?;
    tls.write_all(b"ping")
        .await
        .map_err(|e| turbomon::tls::reason::explain(&e, turbomon::tls::Side::Supervisor))?;
    let mut buf = [0u8; 64];
    match tls.read(&mut buf).await {
        Ok(0) => Err("closed".into()),
        Ok(n) => Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) => Err(turbomon::tls::reason::explain(
            &e,
            turbomon::tls::Side::Supervisor,
        )),
    }
}

#[tokio::test]
async fn a_supervisor_with_a_certificate_from_the_engines_ca_is_let_in_and_named() {
    let f = fixture();
    let (address, _) = echo_server(ServerTls::load(&f.ca.server_files(&f.engine)).unwrap()).await;
    let client = ClientTls::load(&f.ca.client_files(&f.supervisor)).unwrap();
    assert_eq!(
        exchange(&client, address, "localhost").await,
        Ok("supervisor:4".to_string())
    );
    assert_eq!(
        exchange(&client, address, "127.0.0.1").await,
        Ok("supervisor:4".to_string()),
        "an IP literal is checked against the IP names"
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let f = fixture();
    let (address, mut refusals) =
        echo_server(ServerTls::load(&f.ca.server_files(&f.engine)).unwrap()).await;
    let roots = turbomon::tls::files::load_roots(&f.ca.cert).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(address).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    if let Ok(mut tls) = connector.connect(name, tcp).await {
        // TLS 1.3: the refusal arrives after the client's side of the handshake.
        let _ = tls.write_all(b"ping").await;
        let mut buf = [0u8; 8];
        assert!(matches!(tls.read(&mut buf).await, Ok(0) | Err(_)));
    }
    let reason = next_refusal(&mut refusals).await;
    assert!(reason.contains("presented no certificate"), "{reason}");
}

#[tokio::test]
async fn a_supervisor_certificate_from_another_ca_is_refused_on_both_sides_with_words() {
    let f = fixture();
    let (address, mut refusals) =
        echo_server(ServerTls::load(&f.ca.server_files(&f.engine)).unwrap()).await;
    let other_dir = TempDir::new("tls-other");
    let other = TestCa::new(other_dir.path(), "elsewhere");
    let intruder = other.leaf("intruder", &["intruder"], Validity::Valid);
    let client = ClientTls::load(&turbomon::tls::ClientTlsFiles {
        ca: f.ca.cert.clone(),
        cert: intruder.cert,
        key: intruder.key,
    })
    .unwrap();
    let answer = exchange(&client, address, "localhost").await;
    let why = answer.expect_err("refused");
    assert!(why.contains("refused the TLS handshake"), "{why}");
    let reason = next_refusal(&mut refusals).await;
    assert!(
        reason.contains("not signed by the CA in `client_ca`"),
        "{reason}"
    );
}

#[tokio::test]
async fn expired_certificates_are_refused_on_either_side() {
    let f = fixture();
    let expired_engine = f.ca.leaf("old-engine", LOCAL, Validity::Expired);
    let (address, _) =
        echo_server(ServerTls::load(&f.ca.server_files(&expired_engine)).unwrap()).await;
    let client = ClientTls::load(&f.ca.client_files(&f.supervisor)).unwrap();
    let why = exchange(&client, address, "localhost").await.unwrap_err();
    assert!(
        why.contains("engine certificate expired on 2021-01-01"),
        "{why}"
    );

    let (address, mut refusals) =
        echo_server(ServerTls::load(&f.ca.server_files(&f.engine)).unwrap()).await;
    let expired_supervisor = f.ca.leaf("old-supervisor", &["x"], Validity::Expired);
    let client = ClientTls::load(&f.ca.client_files(&expired_supervisor)).unwrap();
    let why = exchange(&client, address, "localhost").await.unwrap_err();
    assert!(why.contains("our certificate has expired"), "{why}");
    let reason = next_refusal(&mut refusals).await;
    assert!(
        reason.contains("client certificate expired on 2021-01-01"),
        "{reason}"
    );
}

#[tokio::test]
async fn an_engine_certificate_for_another_name_is_refused_naming_both() {
    let f = fixture();
    let (address, _) = echo_server(ServerTls::load(&f.ca.server_files(&f.engine)).unwrap()).await;
    let client = ClientTls::load(&f.ca.client_files(&f.supervisor)).unwrap();
    let why = exchange(&client, address, "engine2.example.net")
        .await
        .unwrap_err();
    assert!(
        why.contains("not valid for engine2.example.net") && why.contains("localhost"),
        "{why}"
    );
}

/// Sends an HTTP/2 preface in plaintext to the TLS port at `address`; the next refusal must say
/// so.
async fn assert_plaintext_client_refused(
    address: std::net::SocketAddr,
    refusals: &mut mpsc::UnboundedReceiver<Refusal>,
) {
    let mut tcp = TcpStream::connect(address).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let reason = next_refusal(refusals).await;
    assert!(reason.contains("spoke plaintext, not TLS"), "{reason}");
}

#[tokio::test]
async fn a_plaintext_client_at_a_tls_engine_is_told_apart() {
    let f = fixture();
    let (address, mut refusals) =
        echo_server(ServerTls::load(&f.ca.server_files(&f.engine)).unwrap()).await;
    assert_plaintext_client_refused(address, &mut refusals).await;
}

#[tokio::test]
async fn a_port_check_that_connects_and_closes_is_not_logged_as_a_refusal() {
    let f = fixture();
    let (address, mut refusals) =
        echo_server(ServerTls::load(&f.ca.server_files(&f.engine)).unwrap()).await;
    // What check_tcp or a load balancer's probe does: connect, send nothing, close.
    drop(TcpStream::connect(address).await.unwrap());
    // The next refusal is the plaintext client's, not the probe's.
    assert_plaintext_client_refused(address, &mut refusals).await;
}

#[tokio::test]
async fn a_tls_client_at_a_plaintext_engine_is_told_apart_on_both_sides() {
    let f = fixture();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (refusals_tx, mut refusals) = mpsc::unbounded_channel();
    let _incoming =
        plaintext_incoming(listener, Accept::new("e1", 1024).with_refusals(refusals_tx));
    let client = ClientTls::load(&f.ca.client_files(&f.supervisor)).unwrap();
    let why = exchange(&client, address, "localhost").await.unwrap_err();
    assert!(why.contains("engine answered in plaintext"), "{why}");
    let reason = next_refusal(&mut refusals).await;
    assert!(
        reason.contains("TLS client reached this plaintext engine"),
        "{reason}"
    );
}

#[tokio::test]
async fn rotated_files_serve_new_connections_and_open_ones_keep_going() {
    let f = fixture();
    let tls = ServerTls::load(&f.ca.server_files(&f.engine)).unwrap();
    let (address, _) = echo_server(tls.clone()).await;
    let client = ClientTls::load(&f.ca.client_files(&f.supervisor)).unwrap();
    let tcp = TcpStream::connect(address).await.unwrap();
    let mut open = client.connect(tcp, "localhost").await.unwrap();
    let first_serial = open.get_ref().1.peer_certificates().unwrap()[0].clone();

    // A new leaf for the same engine, written over the old files (as a renewal would).
    std::thread::sleep(Duration::from_millis(20));
    let renewed = f.ca.leaf("engine1", LOCAL, Validity::Valid);
    assert_eq!(renewed.cert, f.engine.cert);
    assert!(tls.reload().expect("new files are good"));
    assert!(!tls.reload().unwrap(), "nothing changed since");

    let tcp = TcpStream::connect(address).await.unwrap();
    let fresh = client.connect(tcp, "localhost").await.unwrap();
    assert_ne!(
        fresh.get_ref().1.peer_certificates().unwrap()[0],
        first_serial,
        "a new connection gets the new certificate"
    );
    open.write_all(b"still").await.unwrap();
    let mut buf = [0u8; 32];
    let n = open.read(&mut buf).await.unwrap();
    assert_eq!(
        &buf[..n],
        b"supervisor:5",
        "the open connection is not dropped"
    );
}

#[tokio::test]
async fn unusable_new_files_keep_the_old_ones_in_force() {
    let f = fixture();
    let tls = ServerTls::load(&f.ca.server_files(&f.engine)).unwrap();
    std::fs::write(&f.engine.key, "not a key").unwrap();
    let error = tls.reload().expect_err("a broken key is refused");
    assert!(error.to_string().contains("engine1.key"), "{error}");
    let (address, _) = echo_server(tls).await;
    let client = ClientTls::load(&f.ca.client_files(&f.supervisor)).unwrap();
    assert!(exchange(&client, address, "localhost").await.is_ok());
}

#[tokio::test]
async fn a_silent_client_does_not_hold_up_anyone_else() {
    let f = fixture();
    let (address, _) = echo_server(ServerTls::load(&f.ca.server_files(&f.engine)).unwrap()).await;
    let _silent: Vec<TcpStream> = futures::future::join_all(
        (0..10).map(|_| async { TcpStream::connect(address).await.unwrap() }),
    )
    .await;
    let client = ClientTls::load(&f.ca.client_files(&f.supervisor)).unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        exchange(&client, address, "localhost"),
    )
    .await
    .expect("served while ten connections say nothing");
    assert_eq!(answer, Ok("supervisor:4".to_string()));
}

#[test]
fn missing_or_wrong_files_are_refused_naming_the_file() {
    let f = fixture();
    let mut files = f.ca.server_files(&f.engine);
    files.client_ca = f.engine.cert.with_file_name("absent.pem");
    let error = ServerTls::load(&files).unwrap_err().to_string();
    assert!(
        error.contains("absent.pem") && error.contains("cannot read"),
        "{error}"
    );
    let mut files = f.ca.client_files(&f.supervisor);
    files.key = f.engine.key.clone();
    let error = ClientTls::load(&files).unwrap_err().to_string();
    assert!(error.contains("does not go with"), "{error}");
    let mut files = f.ca.client_files(&f.supervisor);
    files.cert = f.supervisor.key.clone();
    let error = ClientTls::load(&files).unwrap_err().to_string();
    assert!(error.contains("no PEM certificate"), "{error}");
}
