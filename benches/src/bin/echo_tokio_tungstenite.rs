//! Peer echo server for the end-to-end benchmarks: tokio-tungstenite on a single-threaded tokio
//! runtime (the fair match for one pinned c10m shard). Prints its address like `c10m serve`.
//!
//!   echo-tokio-tungstenite [ADDR]   (default 127.0.0.1:9002)

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await?;
        println!(
            "echo-tokio-tungstenite: listening on ws://{}/echo",
            listener.local_addr()?
        );
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(echo(stream));
            }
        }
    })
}

async fn echo(stream: TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        if msg.is_text() || msg.is_binary() {
            // feed + flush when the stream has nothing buffered: replies to pipelined
            // messages are batched into one write.
            if ws.feed(msg).await.is_err() {
                return;
            }
            if ws.flush().await.is_err() {
                return;
            }
        } else if msg.is_close() {
            return;
        }
    }
}
