//! Peer echo server for the end-to-end benchmarks: fastwebsockets (with its fragment collector
//! and automatic pong/close) on a single-threaded tokio runtime. fastwebsockets leaves the HTTP
//! upgrade to hyper; to keep hyper out of the measurement the upgrade is answered here with
//! c10m's handshake code, then the stream is handed to fastwebsockets.
//!
//!   echo-fastwebsockets [ADDR]   (default 127.0.0.1:9003)

use c10m_engine::proto::handshake::{Accept, Limits, parse_request, write_accept};
use fastwebsockets::{FragmentCollector, OpCode, Role, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9003".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await?;
        println!(
            "echo-fastwebsockets: listening on ws://{}/echo",
            listener.local_addr()?
        );
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = echo(stream).await;
                });
            }
        }
    })
}

async fn echo(mut stream: TcpStream) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        if let Some((request, used)) = parse_request(&head, Limits::default())? {
            if used != head.len() {
                return Err("client sent frames before the handshake answer".into());
            }
            write_accept(&request, &Accept::default(), &mut out);
            stream.write_all(&out).await?;
            break;
        }
    }
    let mut ws = WebSocket::after_handshake(stream, Role::Server);
    ws.set_auto_pong(true);
    ws.set_auto_close(true);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            OpCode::Close => return Ok(()),
            _ => {}
        }
    }
}
