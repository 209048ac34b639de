//! The simulated link, end to end over real loopback sockets: timing under paused tokio time,
//! ordering, loss, handshake, faults, counters, the proxy, profiles, and a real gRPC call through
//! the tonic connector.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout};
use turbomon::link::{
    Link, LinkCounters, LinkError, LinkProfile, builtin_profiles, load_profiles, parse_profiles,
    profile,
};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn link(profile: LinkProfile) -> Link {
    Link::with_seed(profile, 0x5eed).expect("valid profile")
}

/// Asserts `actual` is within `tolerance` of `expected` (the pumps run on tokio's 1 ms timer).
#[track_caller]
fn assert_close(actual: Duration, expected: Duration, tolerance: Duration) {
    let error = actual.abs_diff(expected);
    assert!(
        error <= tolerance,
        "took {actual:?}, expected {expected:?} ± {tolerance:?}"
    );
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    (listener, address)
}

/// An echo server; each connection's end (how its read loop stopped) is sent on `ends`.
async fn echo_server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<ErrorKind>) {
    let (listener, address) = listener().await;
    let (ends, ended) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let ends = ends.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                let end = loop {
                    match stream.read(&mut buffer).await {
                        Ok(0) => break ErrorKind::UnexpectedEof,
                        Ok(read) => {
                            if let Err(error) = stream.write_all(&buffer[..read]).await {
                                break error.kind();
                            }
                        }
                        Err(error) => break error.kind(),
                    }
                };
                let _ = ends.send(end);
            });
        }
    });
    (address, ended)
}

/// When a one-connection sink server saw its connection and its bytes.
#[derive(Debug)]
struct Received {
    accepted: Instant,
    first_byte: Instant,
    last_byte: Instant,
    bytes: Vec<u8>,
    /// When each read returned, and how many bytes it got.
    reads: Vec<(Instant, usize)>,
}

/// A server that accepts one connection and reads `expected` bytes from it.
async fn sink_server(expected: usize) -> (SocketAddr, oneshot::Receiver<Received>) {
    let (listener, address) = listener().await;
    let (report, received) = oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let accepted = Instant::now();
        let mut bytes = Vec::with_capacity(expected);
        let mut buffer = vec![0u8; 64 * 1024];
        let mut first_byte = None;
        let mut reads = Vec::new();
        while bytes.len() < expected {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    first_byte.get_or_insert_with(Instant::now);
                    reads.push((Instant::now(), read));
                    bytes.extend_from_slice(&buffer[..read]);
                }
            }
        }
        let last_byte = Instant::now();
        let _ = report.send(Received {
            accepted,
            first_byte: first_byte.unwrap_or(last_byte),
            last_byte,
            bytes,
            reads,
        });
    });
    (address, received)
}

async fn echo_once(stream: &mut (impl AsyncReadExt + AsyncWriteExt + Unpin), message: &[u8]) {
    stream.write_all(message).await.expect("write");
    let mut echoed = vec![0u8; message.len()];
    timeout(Duration::from_secs(10), stream.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("read echo");
    assert_eq!(echoed, message);
}

#[tokio::test(start_paused = true)]
async fn bytes_take_their_size_over_the_bandwidth_plus_the_latency() {
    let link = link(LinkProfile {
        latency: ms(20),
        bandwidth_bps: Some(1_000_000),
        ..LinkProfile::default()
    });
    let (server, received) = sink_server(125_000).await;
    let mut stream = link.connect(server).await.expect("connect");
    let sent = Instant::now();
    stream.write_all(&[7u8; 125_000]).await.expect("write");
    let received = received.await.expect("server report");
    assert_eq!(received.bytes.len(), 125_000);
    // 125,000 bytes at 1 Mbit/s take 1 s on the wire, then 20 ms of flight.
    assert_close(received.last_byte - sent, ms(1020), ms(2));
    // The first segment (1460 bytes) only waits for its own serialisation: 11.68 ms + 20 ms.
    assert_close(received.first_byte - sent, ms(32), ms(2));
}

#[tokio::test(start_paused = true)]
async fn heavy_jitter_never_reorders_bytes() {
    let link = link(LinkProfile {
        latency: ms(5),
        jitter: ms(20),
        mtu: 64,
        bandwidth_bps: Some(50_000_000),
        ..LinkProfile::default()
    });
    let (server, _ends) = echo_server().await;
    let stream = link.connect(server).await.expect("connect");
    let (mut reader, mut writer) = tokio::io::split(stream);
    const NUMBERS: u32 = 20_000;
    let sending = tokio::spawn(async move {
        let mut next = 0u32;
        let mut write_size = 1;
        while next < NUMBERS {
            let end = (next + write_size).min(NUMBERS);
            let bytes: Vec<u8> = (next..end).flat_map(u32::to_be_bytes).collect();
            writer.write_all(&bytes).await.expect("write");
            next = end;
            write_size = write_size % 997 + 13;
            tokio::time::sleep(Duration::from_micros(300)).await;
        }
        writer
    });
    let mut echoed = vec![0u8; NUMBERS as usize * 4];
    timeout(Duration::from_secs(60), reader.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("read");
    for (expected, bytes) in (0..NUMBERS).zip(echoed.chunks_exact(4)) {
        let number = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        assert_eq!(number, expected, "byte order broken");
    }
    drop(sending.await.expect("sender"));
}

#[tokio::test(start_paused = true)]
async fn a_lost_segment_arrives_one_retransmission_timeout_late() {
    for (loss, expected_delay, expected_lost) in [(0.0, ms(10), 0), (1.0, ms(210), 1)] {
        let link = link(LinkProfile {
            latency: ms(10),
            loss,
            ..LinkProfile::default()
        });
        let (server, received) = sink_server(100).await;
        let mut stream = link.connect(server).await.expect("connect");
        let sent = Instant::now();
        stream.write_all(&[1u8; 100]).await.expect("write");
        let received = received.await.expect("server report");
        // RTO = max(200 ms, 2 × 20 ms round trip) = 200 ms on top of the 10 ms latency.
        assert_close(received.first_byte - sent, expected_delay, ms(1));
        assert_eq!(link.counters().segments_lost, expected_lost, "loss {loss}");
    }
}

#[tokio::test(start_paused = true)]
async fn bytes_behind_a_lost_segment_wait_for_it() {
    // 20 segments of 100 bytes, each lost with probability 0.3. Whatever the draw, bytes arrive
    // either on time (10 ms) or one RTO late (210 ms), and once one byte is late every byte
    // behind it is late too. Try a few seeds until one loses a segment in the middle.
    let mut saw_mid_message_loss = false;
    for seed in 0..20 {
        let link = Link::with_seed(
            LinkProfile {
                latency: ms(10),
                mtu: 100,
                loss: 0.3,
                ..LinkProfile::default()
            },
            seed,
        )
        .expect("valid profile");
        let (server, received) = sink_server(2000).await;
        let mut stream = link.connect(server).await.expect("connect");
        let sent = Instant::now();
        stream.write_all(&[1u8; 2000]).await.expect("write");
        let received = received.await.expect("server report");
        let mut on_time = 0;
        let mut late = 0;
        for (at, bytes) in &received.reads {
            let delay = *at - sent;
            if delay.abs_diff(ms(10)) <= ms(1) {
                assert_eq!(late, 0, "seed {seed}: on-time bytes after a late one");
                on_time += bytes;
            } else {
                assert_close(delay, ms(210), ms(1));
                late += bytes;
            }
        }
        assert_eq!(on_time + late, 2000);
        assert_eq!(late > 0, link.counters().segments_lost > 0, "seed {seed}");
        if on_time > 0 && late > 0 {
            saw_mid_message_loss = true;
            break;
        }
    }
    assert!(saw_mid_message_loss, "no seed lost a segment mid-message");
}

#[tokio::test(start_paused = true)]
async fn a_new_connection_waits_one_round_trip_before_its_first_byte() {
    let link = link(LinkProfile {
        latency: ms(30),
        ..LinkProfile::default()
    });
    let (server, received) = sink_server(5).await;
    let started = Instant::now();
    let mut stream = link.connect(server).await.expect("connect");
    assert_close(started.elapsed(), ms(60), ms(1));
    stream.write_all(b"hello").await.expect("write");
    let received = received.await.expect("server report");
    // Handshake (one round trip) plus the one-way latency of the first byte.
    assert_close(received.first_byte - started, ms(90), ms(1));
    assert!(received.first_byte - received.accepted >= ms(29));
}

#[tokio::test(start_paused = true)]
async fn dialling_a_dead_server_fails_after_the_round_trip_and_opens_nothing() {
    let link = link(LinkProfile {
        latency: ms(20),
        ..LinkProfile::default()
    });
    let (gone, address) = listener().await;
    drop(gone);
    let started = Instant::now();
    let refused = link.connect(address).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(ErrorKind::ConnectionRefused)
    );
    assert_close(started.elapsed(), ms(40), ms(1));
    assert_eq!(link.counters().connections_opened, 0);
}

#[tokio::test(start_paused = true)]
async fn cut_resets_live_connections_and_refuses_new_ones_until_healed() {
    let link = link(LinkProfile {
        latency: ms(5),
        ..LinkProfile::default()
    });
    let (server, mut ends) = echo_server().await;
    let mut stream = link.connect(server).await.expect("connect");
    echo_once(&mut stream, b"before the cut").await;

    link.cut();
    assert!(link.is_cut());
    let mut buffer = [0u8; 16];
    let read = timeout(ms(1000), stream.read(&mut buffer))
        .await
        .expect("read fails promptly");
    assert_eq!(read.map_err(|e| e.kind()), Err(ErrorKind::ConnectionReset));
    let write = stream.write_all(b"after").await;
    assert_eq!(write.map_err(|e| e.kind()), Err(ErrorKind::ConnectionReset));
    // The server sees the connection fail too.
    let server_end = timeout(ms(1000), ends.recv())
        .await
        .expect("server notices");
    assert_eq!(server_end, Some(ErrorKind::ConnectionReset));

    let refused = link.connect(server).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(ErrorKind::ConnectionRefused)
    );

    link.heal();
    let mut healed = link.connect(server).await.expect("connect after heal");
    echo_once(&mut healed, b"after the heal").await;
}

#[tokio::test(start_paused = true)]
async fn black_hole_stalls_a_connection_after_a_large_burst_while_small_messages_pass() {
    let link = link(LinkProfile {
        latency: ms(5),
        blackhole_bytes: Some(4000),
        ..LinkProfile::default()
    });
    let (server, _ends) = echo_server().await;
    let mut stream = link.connect(server).await.expect("connect");
    for round in 0..3u8 {
        echo_once(&mut stream, &[round; 1000]).await;
    }
    assert_eq!(link.counters().client_to_server_bytes, 3000);

    stream.write_all(&[9u8; 10_000]).await.expect("write");
    let mut buffer = [0u8; 1024];
    let stalled = timeout(Duration::from_secs(30), stream.read(&mut buffer)).await;
    assert!(stalled.is_err(), "a burst above the black hole was echoed");
    // Nothing more gets through, not even small messages.
    stream.write_all(&[1u8; 10]).await.expect("write");
    let stalled = timeout(Duration::from_secs(30), stream.read(&mut buffer)).await;
    assert!(stalled.is_err(), "a stalled connection delivered");
    assert_eq!(link.counters().client_to_server_bytes, 3000);

    // A new connection is not stalled and still carries small messages.
    let mut fresh = link.connect(server).await.expect("connect");
    echo_once(&mut fresh, b"small").await;
}

#[tokio::test(start_paused = true)]
async fn black_hole_can_be_set_on_a_live_link() {
    let link = link(LinkProfile {
        latency: ms(5),
        ..LinkProfile::default()
    });
    let (server, _ends) = echo_server().await;
    let mut stream = link.connect(server).await.expect("connect");
    echo_once(&mut stream, &[3u8; 20_000]).await;
    link.set_blackhole(Some(1000));
    assert_eq!(link.blackhole(), Some(1000));
    stream.write_all(&[4u8; 2000]).await.expect("write");
    let mut buffer = [0u8; 16];
    let stalled = timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
    assert!(stalled.is_err(), "black hole set at run time had no effect");
}

#[tokio::test(start_paused = true)]
async fn counters_count_both_directions_and_connections() {
    let link = link(LinkProfile {
        latency: ms(2),
        bandwidth_bps: Some(100_000_000),
        ..LinkProfile::default()
    });
    let (server, _ends) = echo_server().await;
    let mut first = link.connect(server).await.expect("connect");
    echo_once(&mut first, &[5u8; 1000]).await;
    let mut second = link.connect(server).await.expect("connect");
    echo_once(&mut second, &[6u8; 234]).await;
    assert_eq!(
        link.counters(),
        LinkCounters {
            client_to_server_bytes: 1234,
            server_to_client_bytes: 1234,
            connections_opened: 2,
            segments_lost: 0,
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_closing_its_end_closes_the_server_connection() {
    let link = link(LinkProfile {
        latency: ms(5),
        ..LinkProfile::default()
    });
    let (server, mut ends) = echo_server().await;
    let mut stream = link.connect(server).await.expect("connect");
    echo_once(&mut stream, b"bye").await;
    stream.shutdown().await.expect("shutdown");
    let server_end = timeout(ms(1000), ends.recv())
        .await
        .expect("server notices");
    assert_eq!(server_end, Some(ErrorKind::UnexpectedEof));
    // The server's close travels back: the client reads end of stream.
    let mut buffer = [0u8; 4];
    let read = timeout(ms(1000), stream.read(&mut buffer))
        .await
        .expect("eof");
    assert_eq!(read.expect("clean end"), 0);
}

#[tokio::test(start_paused = true)]
async fn proxy_shapes_connections_between_loopback_sockets() {
    let link = link(LinkProfile {
        latency: ms(15),
        ..LinkProfile::default()
    });
    let (server, _ends) = echo_server().await;
    let (proxy_listener, proxy_address) = listener().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let proxy = tokio::spawn({
        let link = link.clone();
        async move {
            link.proxy(proxy_listener, server, async {
                let _ = stopped.await;
            })
            .await
        }
    });

    let started = Instant::now();
    let mut client = TcpStream::connect(proxy_address).await.expect("connect");
    echo_once(&mut client, b"ping").await;
    // Handshake round trip, then the request's and the reply's one-way latencies.
    assert_close(started.elapsed(), ms(60), ms(2));

    let again = Instant::now();
    echo_once(&mut client, b"pong").await;
    assert_close(again.elapsed(), ms(30), ms(2));
    assert_eq!(link.counters().connections_opened, 1);
    assert_eq!(link.counters().client_to_server_bytes, 8);

    // While cut, the proxy resets connections it accepts.
    link.cut();
    let mut buffer = [0u8; 4];
    let read = timeout(ms(1000), client.read(&mut buffer))
        .await
        .expect("reset");
    assert_eq!(read.map_err(|e| e.kind()), Err(ErrorKind::ConnectionReset));
    let mut refused = TcpStream::connect(proxy_address).await.expect("tcp accept");
    let read = timeout(ms(1000), refused.read(&mut buffer))
        .await
        .expect("reset");
    assert_eq!(read.map_err(|e| e.kind()), Err(ErrorKind::ConnectionReset));
    link.heal();
    let mut healed = TcpStream::connect(proxy_address).await.expect("connect");
    echo_once(&mut healed, b"back").await;

    let _ = stop.send(());
    proxy.await.expect("proxy task").expect("proxy result");
}

#[test]
fn profile_validation_refuses_bad_values_naming_the_field() {
    let wan = profile("wan").expect("wan");
    let cases = [
        (
            LinkProfile {
                bandwidth_bps: Some(0),
                ..wan.clone()
            },
            "bandwidth",
        ),
        (
            LinkProfile {
                loss: 1.5,
                ..wan.clone()
            },
            "loss",
        ),
        (
            LinkProfile {
                loss: -0.01,
                ..wan.clone()
            },
            "loss",
        ),
        (
            LinkProfile {
                loss: f64::NAN,
                ..wan.clone()
            },
            "loss",
        ),
        (
            LinkProfile {
                mtu: 0,
                ..wan.clone()
            },
            "mtu",
        ),
        (
            LinkProfile {
                latency: Duration::from_secs(3600),
                ..wan.clone()
            },
            "latency",
        ),
        (
            LinkProfile {
                blackhole_bytes: Some(0),
                ..wan.clone()
            },
            "blackhole_bytes",
        ),
    ];
    for (bad, field) in cases {
        match bad.validate() {
            Err(LinkError::InvalidProfile { field: named, .. }) => assert_eq!(named, field),
            other => panic!("{field}: expected an invalid-profile error, got {other:?}"),
        }
        let error = Link::new(bad).expect_err("Link::new accepted a bad profile");
        assert!(error.to_string().contains(field), "{error}");
    }
    for good in builtin_profiles().into_values() {
        assert!(good.validate().is_ok(), "{good:?}");
    }
}

#[test]
fn shipped_links_file_matches_the_built_in_profiles() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/links.toml");
    let loaded = load_profiles(&path).expect("config/links.toml loads");
    assert_eq!(loaded, builtin_profiles());
}

#[test]
fn built_in_profiles_have_the_specified_numbers() {
    let wan = profile("wan").expect("wan");
    assert_eq!(wan.latency, ms(25));
    assert_eq!(wan.bandwidth_bps, Some(10_000_000));
    assert_eq!(wan.round_trip(), ms(50));
    assert_eq!(profile("lossy-wan").expect("lossy-wan").loss, 0.01);
    let satellite = profile("satellite").expect("satellite");
    assert_eq!(
        (satellite.latency, satellite.bandwidth_bps, satellite.loss),
        (ms(300), Some(2_000_000), 0.005)
    );
    let modem = profile("modem").expect("modem");
    assert_eq!((modem.latency, modem.bandwidth_bps), (ms(60), Some(56_000)));
    let lan = profile("lan").expect("lan");
    assert_eq!(
        (lan.latency, lan.bandwidth_bps, lan.mtu),
        (Duration::from_micros(100), Some(1_000_000_000), 1460)
    );
}

#[test]
fn unknown_profile_names_list_the_known_ones_and_none_means_no_link() {
    let error = profile("dsl").expect_err("dsl is not built in");
    let message = error.to_string();
    for name in ["none", "lan", "wan", "lossy-wan", "satellite", "modem"] {
        assert!(message.contains(name), "{message}");
    }
    assert!(matches!(profile("none"), Err(LinkError::NoLink)));
}

#[test]
fn profiles_file_errors_name_file_line_and_key() {
    let path = Path::new("links-under-test.toml");
    let unknown_key = "[profiles.wan]\nlatency = \"25ms\"\nbandwith = \"10Mbit\"\n";
    match parse_profiles(unknown_key, path) {
        Err(LinkError::Parse {
            path: named,
            line,
            message,
            ..
        }) => {
            assert_eq!(named, path);
            assert_eq!(line, 3);
            assert!(message.contains("bandwith"), "{message}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    let bad_loss = "[profiles.wan]\nlatency = \"25ms\"\n\nloss = 1.5\n";
    match parse_profiles(bad_loss, path) {
        Err(error @ LinkError::Parse { line: 4, .. }) => {
            let message = error.to_string();
            assert!(message.contains("links-under-test.toml:4:"), "{message}");
            assert!(message.contains("loss"), "{message}");
        }
        other => panic!("expected a parse error on line 4, got {other:?}"),
    }
    let bad_bandwidth = "[profiles.wan]\nlatency = \"25ms\"\nbandwidth = \"10MB\"\n";
    assert!(matches!(
        parse_profiles(bad_bandwidth, path),
        Err(LinkError::Parse { line: 3, .. })
    ));
    let reserved = "[profiles.none]\nlatency = \"1ms\"\n";
    assert!(matches!(
        parse_profiles(reserved, path),
        Err(LinkError::Parse { line: 1, .. })
    ));
    let missing = load_profiles(Path::new("/nonexistent/links.toml"));
    assert!(matches!(missing, Err(LinkError::Read { .. })));
}

#[tokio::test]
async fn a_grpc_call_works_through_the_connector() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let (_reporter, health) = tonic_health::server::health_reporter();
    let (listener, address) = listener().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );

    let link = link(LinkProfile {
        latency: ms(5),
        bandwidth_bps: Some(10_000_000),
        ..LinkProfile::default()
    });
    let started = std::time::Instant::now();
    let channel = tonic::transport::Endpoint::from_static("http://engine.link.invalid")
        .connect_with_connector(link.connector(address))
        .await
        .expect("channel through the link");
    let mut client = HealthClient::new(channel);
    let reply = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check through the link");
    assert_eq!(reply.into_inner().status(), ServingStatus::Serving);
    // At least the handshake and one request/response round trip.
    assert!(started.elapsed() >= ms(19), "{:?}", started.elapsed());
    let counters = link.counters();
    assert_eq!(counters.connections_opened, 1);
    assert!(counters.client_to_server_bytes > 0 && counters.server_to_client_bytes > 0);

    let _ = stop.send(());
    server.await.expect("server task").expect("server");
}
