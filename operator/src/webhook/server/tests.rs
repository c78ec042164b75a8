//! The served certificate ([`ServingCert::load`]) and the server end to end: a real listener on
//! 127.0.0.1, a rustls client trusting the webhook's CA as the API server does, HTTP/1.1 by
//! hand.

use std::io;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::*;
use crate::webhook::certs::{self, Pair};

/// The name the API server calls the webhook by.
const NAME: &str = "ferrolb-operator-webhook.ferrolb-system.svc";
/// The longest any step of a test may take: a hang fails instead of blocking.
const LIMIT: Duration = Duration::from_secs(10);

fn pair() -> Pair {
    certs::issue(
        &certs::service_dns_names("ferrolb-operator-webhook", "ferrolb-system"),
        Timestamp::now(),
        Duration::from_secs(3600),
    )
    .unwrap()
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(LIMIT, future).await {
        Ok(t) => t,
        Err(_) => panic!("{what}: no answer within {LIMIT:?}"),
    }
}

// --- ServingCert::load -----------------------------------------------------------------------

/// The end-entity certificate of what `cert` serves now.
fn served(cert: &ServingCert) -> Option<CertificateDer<'static>> {
    let current = cert.current.read().unwrap();
    current.as_ref().map(|c| c.cert[0].clone())
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

#[test]
fn a_loaded_pair_is_served_and_the_same_pem_again_is_no_change() {
    let (a, b) = (pair(), pair());
    let cert = ServingCert::default();
    assert!(!cert.is_loaded());
    assert_eq!(served(&cert), None);
    // (pair loaded, Ok(new?))
    for (loaded, new) in [(&a, true), (&a, false), (&b, true), (&b, false), (&a, true)] {
        let result = cert.load(loaded.cert.as_bytes(), loaded.key.as_bytes());
        assert!(matches!(result, Ok(n) if n == new), "{result:?}");
        assert!(cert.is_loaded());
        assert_eq!(served(&cert), Some(der(&loaded.cert)));
    }
}

#[test]
fn an_unusable_pair_is_refused_and_the_last_good_one_kept() {
    let (a, b) = (pair(), pair());
    let cert = ServingCert::default();
    cert.load(a.cert.as_bytes(), a.key.as_bytes()).unwrap();
    // (what, certificate PEM, key PEM, a key error?, the error's message begins)
    let rows: Vec<(&str, &str, &str, bool, &str)> = vec![
        (
            "garbage as the certificate",
            "not a certificate",
            &b.key,
            false,
            "no certificate in the PEM: ",
        ),
        (
            "an empty certificate",
            "",
            &b.key,
            false,
            "no certificate in the PEM: ",
        ),
        (
            "garbage as the key",
            &b.cert,
            "not a key",
            true,
            "no usable private key in the PEM: ",
        ),
        (
            "an empty key",
            &b.cert,
            "",
            true,
            "no usable private key in the PEM: ",
        ),
        (
            "the key of another pair",
            &b.cert,
            &a.key,
            true,
            "no usable private key in the PEM: it does not match the certificate: ",
        ),
        (
            "the CA as the certificate",
            &b.ca,
            &b.key,
            true,
            "no usable private key in the PEM: it does not match the certificate: ",
        ),
    ];
    for (what, crt, key, key_error, message) in rows {
        let err = cert.load(crt.as_bytes(), key.as_bytes()).unwrap_err();
        assert_eq!(
            matches!(err, CertError::Key(_)),
            key_error,
            "{what}: {err:?}"
        );
        assert!(err.to_string().starts_with(message), "{what}: {err}");
        assert!(
            !err.to_string().contains("PRIVATE KEY"),
            "{what}: the error shows no key: {err}"
        );
        assert_eq!(served(&cert), Some(der(&a.cert)), "{what}: still serving a");
        assert!(
            !cert.load(a.cert.as_bytes(), a.key.as_bytes()).unwrap(),
            "{what}: a is still the one loaded"
        );
    }
}

#[test]
fn a_certificate_that_does_not_parse_is_a_certificate_error() {
    let a = pair();
    let cert = ServingCert::default();
    let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let err = cert.load(broken.as_bytes(), a.key.as_bytes()).unwrap_err();
    assert!(matches!(err, CertError::Certificate(_)), "{err:?}: {err}");
}

// --- the server, end to end --------------------------------------------------------------------

/// A server on 127.0.0.1 serving `pair`, with empty watches.
struct Running {
    addr: SocketAddr,
    cert: Arc<ServingCert>,
    draining: Arc<AtomicBool>,
    metrics: Metrics,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<()>,
}

async fn start(pair: &Pair, grace: Duration) -> Running {
    let cert = Arc::new(ServingCert::default());
    cert.load(pair.cert.as_bytes(), pair.key.as_bytes())
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Stores never written: no config exists, the nodes are not known.
    let (configs, _) = reflector::store();
    let (nodes, _) = reflector::store();
    let draining = Arc::new(AtomicBool::new(false));
    let metrics = Metrics::default();
    let context = Context {
        configs,
        nodes,
        nodes_known: Arc::new(AtomicBool::new(false)),
        draining: draining.clone(),
        metrics: metrics.clone(),
        in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(serve(
        listener,
        tls_config(cert.clone()).unwrap(),
        router(context),
        async {
            let _ = stopped.await;
        },
        grace,
    ));
    Running {
        addr,
        cert,
        draining,
        metrics,
        stop: Some(stop),
        served,
    }
}

fn connector(
    ca: &str,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(der(ca)).unwrap();
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

const ALL: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Connects as the API server does, trusting only `ca`.
async fn connect(addr: SocketAddr, ca: &str) -> io::Result<TlsStream<TcpStream>> {
    connect_with(addr, connector(ca, ALL, &[])).await
}

async fn connect_with(
    addr: SocketAddr,
    connector: TlsConnector,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    within(
        "the TLS handshake",
        connector.connect(ServerName::try_from(NAME).unwrap(), tcp),
    )
    .await
}

fn request(method: &str, body: &[u8], close: bool) -> Vec<u8> {
    let mut request = format!(
        "{method} {PATH} HTTP/1.1\r\nhost: {NAME}:443\r\ncontent-type: application/json\r\naccept: application/json, */*\r\ncontent-length: {}\r\n{}\r\n",
        body.len(),
        if close { "connection: close\r\n" } else { "" },
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

/// Reads, treating a close without TLS close_notify as the end.
async fn read_some(stream: &mut (impl AsyncRead + Unpin), chunk: &mut [u8]) -> io::Result<usize> {
    match stream.read(chunk).await {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        read => read,
    }
}

/// Reads one response: the head, then `content-length` bytes.
async fn read_answer(stream: &mut (impl AsyncRead + Unpin)) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = vec![0; 16 << 10];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = within("the response head", read_some(stream, &mut chunk))
            .await
            .unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = within("the response body", read_some(stream, &mut chunk))
            .await
            .unwrap();
        assert!(n > 0, "closed in the body");
        body.extend_from_slice(&chunk[..n]);
    }
    Answer {
        status,
        headers,
        body,
    }
}

/// Whether the server closes the connection (within the limit).
async fn closes(stream: &mut (impl AsyncRead + Unpin)) -> bool {
    let mut chunk = [0; 1024];
    matches!(
        tokio::time::timeout(LIMIT, read_some(stream, &mut chunk)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// One request on a new connection trusting `ca`, which the server then closes.
async fn exchange(addr: SocketAddr, ca: &str, request: &[u8]) -> Answer {
    let mut stream = connect(addr, ca).await.unwrap();
    stream.write_all(request).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(
        closes(&mut stream).await,
        "closed after `connection: close`"
    );
    answer
}

/// A CREATE of a valid LoadBalancerConfig, as the API server sends it.
fn valid_review() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "2d6f1c8e-0a4b-4d6e-9f3a-7c1b2e3d4f50",
            "kind": {"group": "ferrolb.io", "version": "v1alpha1", "kind": "LoadBalancerConfig"},
            "resource": {"group": "ferrolb.io", "version": "v1alpha1", "resource": "loadbalancerconfigs"},
            "name": "ferrolb",
            "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin"},
            "object": {
                "apiVersion": "ferrolb.io/v1alpha1",
                "kind": "LoadBalancerConfig",
                "metadata": {"name": "ferrolb"},
                "spec": {"addressPools": [{"name": "public", "addresses": ["203.0.113.0/28"]}]},
            },
            "oldObject": null,
            "dryRun": false,
        },
    }))
    .unwrap()
}

fn count(metrics: &Metrics, outcome: &'static str) -> u64 {
    metrics
        .webhook_requests
        .get_or_create(&WebhookLabels { outcome })
        .get()
}

#[tokio::test]
async fn a_review_is_answered_200_with_the_decision() {
    let a = pair();
    let server = start(&a, LIMIT).await;
    let answer = exchange(server.addr, &a.ca, &request("POST", &valid_review(), true)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let review = answer.json();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(
        review["response"]["uid"],
        "2d6f1c8e-0a4b-4d6e-9f3a-7c1b2e3d4f50"
    );
    assert_eq!(review["response"]["allowed"], true, "{review}");
    assert_eq!(count(&server.metrics, "allowed"), 1);
}

#[tokio::test]
async fn a_body_that_is_no_review_is_answered_400_with_why() {
    let a = pair();
    let server = start(&a, LIMIT).await;
    let answer = exchange(server.addr, &a.ca, &request("POST", b"{\"kind\": ", true)).await;
    assert_eq!(answer.status, 400);
    assert!(
        answer
            .text()
            .starts_with("the body is not an AdmissionReview: ")
            && answer.text().ends_with('\n'),
        "{:?}",
        answer.text()
    );
    assert_eq!(count(&server.metrics, "malformed"), 1);
}

#[tokio::test]
async fn a_body_above_the_limit_is_answered_413() {
    let a = pair();
    let server = start(&a, LIMIT).await;
    let stream = connect(server.addr, &a.ca).await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(stream);
    // Written while the answer is read: the server may answer before it has read it all.
    let body = vec![b' '; MAX_BODY + 1];
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&request("POST", &body, true)).await;
        writer
    });
    let answer = read_answer(&mut reader).await;
    assert_eq!(answer.status, 413, "{}", answer.text());
    let _ = within("the writer", writing).await;
}

#[tokio::test]
async fn a_body_at_the_limit_is_read() {
    let a = pair();
    let server = start(&a, LIMIT).await;
    let stream = connect(server.addr, &a.ca).await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut body = valid_review();
    body.resize(MAX_BODY, b' ');
    let writing = tokio::spawn(async move {
        writer
            .write_all(&request("POST", &body, true))
            .await
            .unwrap();
        writer
    });
    let answer = read_answer(&mut reader).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let _ = within("the writer", writing).await;
}

#[tokio::test]
async fn only_post_is_answered() {
    let a = pair();
    let server = start(&a, LIMIT).await;
    for method in ["GET", "PUT", "DELETE"] {
        let answer = exchange(server.addr, &a.ca, &request(method, b"", true)).await;
        assert_eq!(answer.status, 405, "{method}");
    }
    let mut other_path = request("POST", &valid_review(), true);
    other_path.splice(5..5 + PATH.len(), b"/mutate".iter().copied());
    let answer = exchange(server.addr, &a.ca, &other_path).await;
    assert_eq!(answer.status, 404);
}

#[tokio::test]
async fn a_new_certificate_is_served_to_the_next_connection_without_dropping_the_open_ones() {
    let (a, b) = (pair(), pair());
    let server = start(&a, LIMIT).await;
    let mut open = connect(server.addr, &a.ca).await.unwrap();
    open.write_all(&request("POST", &valid_review(), false))
        .await
        .unwrap();
    assert_eq!(read_answer(&mut open).await.status, 200);

    assert!(
        server
            .cert
            .load(b.cert.as_bytes(), b.key.as_bytes())
            .unwrap()
    );

    let answer = exchange(server.addr, &b.ca, &request("POST", &valid_review(), true)).await;
    assert_eq!(
        answer.status, 200,
        "a client trusting only the new CA is served"
    );
    let err = connect(server.addr, &a.ca).await.unwrap_err();
    let rustls_err = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(
            rustls_err,
            // BadSignature when both CAs were made in the same second (their names are alike).
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature
            ))
        ),
        "a client trusting only the old CA is refused the new certificate: {err:?}"
    );
    open.write_all(&request("POST", &valid_review(), true))
        .await
        .unwrap();
    assert_eq!(
        read_answer(&mut open).await.status,
        200,
        "a connection opened before still works"
    );
}

#[tokio::test]
async fn tls_1_2_and_1_3_clients_are_served_http_1_1() {
    let a = pair();
    let server = start(&a, LIMIT).await;
    // (client's versions, negotiated). TLS 1.1 and older: rustls cannot offer them.
    for (versions, negotiated) in [
        (&[&rustls::version::TLS12][..], ProtocolVersion::TLSv1_2),
        (&[&rustls::version::TLS13][..], ProtocolVersion::TLSv1_3),
        (ALL, ProtocolVersion::TLSv1_3),
    ] {
        // As Go's client, offering h2 first.
        let connector = connector(&a.ca, versions, &[b"h2", b"http/1.1"]);
        let mut stream = connect_with(server.addr, connector).await.unwrap();
        let (_, session) = stream.get_ref();
        assert_eq!(session.protocol_version(), Some(negotiated));
        assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
        stream
            .write_all(&request("POST", &valid_review(), true))
            .await
            .unwrap();
        assert_eq!(read_answer(&mut stream).await.status, 200, "{negotiated:?}");
    }
}

#[tokio::test]
async fn a_serving_replica_keeps_connections_open_and_a_draining_one_closes_them() {
    let a = pair();
    let server = start(&a, LIMIT).await;
    let mut stream = connect(server.addr, &a.ca).await.unwrap();
    // Keep-alive requests (no `connection: close` from the client).
    stream
        .write_all(&request("POST", &valid_review(), false))
        .await
        .unwrap();
    let answer = read_answer(&mut stream).await;
    assert_eq!((answer.status, answer.header("connection")), (200, None));

    server.draining.store(true, Ordering::Relaxed);
    stream
        .write_all(&request("POST", &valid_review(), false))
        .await
        .unwrap();
    let answer = read_answer(&mut stream).await;
    assert_eq!(
        (answer.status, answer.header("connection")),
        (200, Some("close"))
    );
    assert!(
        closes(&mut stream).await,
        "the draining replica closes the connection"
    );

    let answer = exchange(server.addr, &a.ca, &request("POST", b"garbage", true)).await;
    assert_eq!(
        (answer.status, answer.header("connection")),
        (400, Some("close")),
        "every answer says it"
    );
}

/// A keep-alive request whose head is sent and its body not: in flight. The server's
/// `100 Continue` says the handler is reading the body.
async fn in_flight(server: &Running, ca: &str) -> TlsStream<TcpStream> {
    let mut stream = connect(server.addr, ca).await.unwrap();
    let mut head = request("POST", b"0123456789", false);
    head.truncate(head.len() - "\r\n0123456789".len());
    head.extend_from_slice(b"expect: 100-continue\r\n\r\n");
    stream.write_all(&head).await.unwrap();
    assert_eq!(read_answer(&mut stream).await.status, 100);
    stream
}

#[tokio::test]
async fn after_stop_a_request_in_flight_is_answered_then_closed() {
    let a = pair();
    let mut server = start(&a, LIMIT).await;
    let mut stream = in_flight(&server, &a.ca).await;
    server.stop.take().unwrap().send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    stream.write_all(b"0123456789").await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(
        closes(&mut stream).await,
        "closed after the answer, though the client asked to keep it"
    );
    within("serve", &mut server.served).await.unwrap();
}

#[tokio::test]
async fn after_stop_serve_returns_within_grace_and_new_connections_are_refused() {
    let a = pair();
    let grace = Duration::from_millis(300);
    let mut server = start(&a, grace).await;
    // A client that never finishes its request holds serve for the whole grace.
    let _stuck = in_flight(&server, &a.ca).await;
    let stopped = Instant::now();
    server.stop.take().unwrap().send(()).unwrap();
    within("serve", &mut server.served).await.unwrap();
    let took = stopped.elapsed();
    assert!(
        took >= grace / 2 && took < grace + Duration::from_millis(500),
        "{took:?}"
    );
    let refused = TcpStream::connect(server.addr).await.unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn during_the_grace_new_connections_are_refused() {
    let a = pair();
    let mut server = start(&a, Duration::from_secs(2)).await;
    let _stuck = in_flight(&server, &a.ca).await;
    server.stop.take().unwrap().send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !server.served.is_finished(),
        "serve waits for the stuck client"
    );
    let connected = TcpStream::connect(server.addr).await;
    assert!(
        matches!(&connected, Err(e) if e.kind() == io::ErrorKind::ConnectionRefused),
        "{connected:?}"
    );
    within("serve", &mut server.served).await.unwrap();
}
