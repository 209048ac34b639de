//! (stub until the link branch lands)
#![allow(missing_docs, unreachable_pub)]
use std::net::SocketAddr;
#[derive(Clone, Debug, PartialEq)]
pub struct LinkProfile;
#[derive(Clone)]
pub struct Link(LinkProfile);
pub struct LinkStream(tokio::net::TcpStream);
impl Link {
    pub fn profile(&self) -> &LinkProfile {
        &self.0
    }
    pub async fn connect(&self, upstream: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        tokio::net::TcpStream::connect(upstream).await
    }
}
impl Link {
    pub fn new(p: LinkProfile) -> Self {
        Self(p)
    }
}
pub fn profile(name: &str) -> Result<LinkProfile, String> {
    Err(format!("no link {name}"))
}
