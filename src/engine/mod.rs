//! (stub until the engine branch lands)
#![allow(missing_docs, unreachable_pub)]
#[derive(Clone)]
pub struct Engine;
impl Engine {
    pub fn new(_c: crate::config::EngineConfig) -> Self {
        Engine
    }
    pub async fn serve(
        self,
        _l: tokio::net::TcpListener,
        s: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), std::io::Error> {
        s.await;
        Ok(())
    }
}
