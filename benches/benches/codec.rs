//! Protocol-core benchmarks, each group with tungstenite measured in the same run so the figure
//! is a ratio: unmasking, parsing streams of masked frames (what a server reads), and encoding.
//!
//!   cargo bench -p c10m-benches --bench codec

use std::hint::black_box;
use std::io::Cursor;
use std::sync::Arc;

use c10m_benches::masked_binary_frames;
use c10m_engine::proto::mask::{apply_mask, apply_mask_bytewise};
use c10m_engine::proto::{Config, Connection, Read};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tungstenite::protocol::frame::FrameSocket;
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};

fn config() -> Arc<Config> {
    Arc::new(Config {
        max_frame_size: 64 << 20,
        max_message_size: 64 << 20,
        ..Config::default()
    })
}

fn tungstenite_config() -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.max_message_size = Some(64 << 20);
    c.max_frame_size = Some(64 << 20);
    c
}

/// Raw masking, and one masked frame parsed and unmasked by each implementation
/// (tungstenite's masking routine is private, so its frame reader is the equivalent).
fn unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for size in [16usize, 125, 1024, 16 << 10, 64 << 10, 1 << 20] {
        group.throughput(Throughput::Bytes(size as u64));
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut buf = vec![0x5au8; size];
        group.bench_function(BenchmarkId::new("c10m/apply_mask", size), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), key))
        });
        group.bench_function(BenchmarkId::new("bytewise", size), |b| {
            b.iter(|| apply_mask_bytewise(black_box(&mut buf), key))
        });
        let frame = masked_binary_frames(1, size);
        group.bench_function(BenchmarkId::new("c10m/recv-frame", size), |b| {
            b.iter_batched_ref(
                || frame.clone(),
                |input| {
                    let mut conn = Connection::server(config(), 0);
                    black_box(conn.recv(input, &mut Vec::new(), 0).is_ok())
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function(BenchmarkId::new("tungstenite/read-frame", size), |b| {
            b.iter_batched_ref(
                || FrameSocket::new(Cursor::new(frame.clone())),
                |socket| black_box(socket.read(None).map(|f| f.map(|f| f.len()))),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// A stream of masked binary frames parsed into messages, as a server reads them.
fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (size, count) in [
        (20usize, 10_000usize),
        (125, 10_000),
        (16 << 10, 200),
        (1 << 20, 4),
    ] {
        let input = masked_binary_frames(count, size);
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(BenchmarkId::new("c10m", format!("{size}B")), |b| {
            b.iter_batched_ref(
                || input.clone(),
                |input| {
                    let mut conn = Connection::server(config(), 0);
                    let mut out = Vec::new();
                    let mut at = 0;
                    let mut total = 0;
                    while let Ok(Read::Frame { consumed, event }) =
                        conn.recv(&mut input[at..], &mut out, 0)
                    {
                        if let Some(c10m_engine::proto::Event::Message(m)) = event {
                            total += m.as_bytes().len();
                        }
                        at += consumed;
                    }
                    assert_eq!(total, size * count);
                },
                BatchSize::LargeInput,
            )
        });
        group.bench_function(BenchmarkId::new("tungstenite", format!("{size}B")), |b| {
            b.iter_batched_ref(
                || {
                    WebSocket::from_raw_socket(
                        Cursor::new(input.clone()),
                        Role::Server,
                        Some(tungstenite_config()),
                    )
                },
                |ws| {
                    let mut total = 0;
                    while let Ok(m) = ws.read() {
                        total += m.len();
                    }
                    assert_eq!(total, size * count);
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// Server frames encoded into an output buffer.
fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (size, count) in [(20usize, 10_000usize), (16 << 10, 200)] {
        let payload = vec![7u8; size];
        group.throughput(Throughput::Bytes((size * count) as u64));
        group.bench_function(BenchmarkId::new("c10m", format!("{size}B")), |b| {
            let mut conn = Connection::server(config(), 0);
            let mut out = Vec::with_capacity(count * (size + 10));
            b.iter(|| {
                out.clear();
                for _ in 0..count {
                    let _ = conn.send_binary(black_box(&payload), &mut out);
                }
                black_box(out.len())
            })
        });
        group.bench_function(BenchmarkId::new("tungstenite", format!("{size}B")), |b| {
            let shared = tungstenite::Bytes::from(payload.clone());
            let sink = Cursor::new(Vec::<u8>::with_capacity(count * (size + 10)));
            let mut ws = WebSocket::from_raw_socket(sink, Role::Server, Some(tungstenite_config()));
            b.iter(|| {
                ws.get_mut().get_mut().clear();
                ws.get_mut().set_position(0);
                for _ in 0..count {
                    let _ = ws.write(tungstenite::Message::Binary(shared.clone()));
                }
                let _ = ws.flush();
                black_box(ws.get_ref().get_ref().len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, unmask, parse, encode);
criterion_main!(benches);
