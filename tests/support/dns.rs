//! An authoritative DNS server on 127.0.0.1 (UDP, port 0) for tests of DKIM, SPF and DMARC:
//! the TXT and A records a test adds; NXDOMAIN for names it has none for. Wire format by
//! hickory-proto, so the bot's real resolver talks to it exactly as to any name server.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, TXT};
use hickory_proto::rr::{RData, Record};
use tokio::net::UdpSocket;

type Zone = HashMap<String, Vec<RData>>;

pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsServer {
    pub async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind dns");
        let addr = socket.local_addr().expect("addr");
        let zone: Arc<Mutex<Zone>> = Arc::default();
        let queries: Arc<Mutex<Vec<String>>> = Arc::default();
        let (z, q) = (zone.clone(), queries.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else { return };
                let Ok(request) = Message::from_vec(&buf[..n]) else { continue };
                let mut response = Message::response(request.metadata.id, request.metadata.op_code);
                response.metadata.authoritative = true;
                response.metadata.recursion_desired = request.metadata.recursion_desired;
                response.metadata.recursion_available = true;
                response.metadata.message_type = MessageType::Response;
                let mut known = true;
                for query in &request.queries {
                    let name = key(&query.name().to_ascii());
                    q.lock().expect("lock").push(format!("{name} {}", query.query_type()));
                    let zone = z.lock().expect("lock");
                    match zone.get(&name) {
                        None => known = false,
                        Some(records) => {
                            for rdata in records.iter().filter(|r| r.record_type() == query.query_type()) {
                                response.add_answer(Record::from_rdata(
                                    query.name().clone(),
                                    60,
                                    rdata.clone(),
                                ));
                            }
                        }
                    }
                    response.add_query(query.clone());
                }
                if !known {
                    response.metadata.response_code = ResponseCode::NXDomain;
                }
                if let Some(edns) = &request.edns {
                    response.set_edns(edns.clone());
                }
                if let Ok(bytes) = response.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        Self { addr, zone, queries, task }
    }

    fn add(&self, name: &str, rdata: RData) {
        self.zone.lock().expect("lock").entry(key(name)).or_default().push(rdata);
    }

    /// A TXT record (split into 255-byte strings as on the wire).
    pub fn txt(&self, name: &str, value: &str) {
        let chunks = value.as_bytes().chunks(255).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        self.add(name, RData::TXT(TXT::new(chunks)));
    }

    pub fn a(&self, name: &str, ip: Ipv4Addr) {
        self.add(name, RData::A(A(ip)));
    }

    /// Every question asked so far, as `name TYPE`.
    pub fn queries(&self) -> Vec<String> {
        self.queries.lock().expect("lock").clone()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
