//! The `c10m` command line, run as the built binary: every setting is a flag, a `C10M_*`
//! variable and a TOML key, with precedence flag > variable > file > default; counts in the one
//! grammar; limits refused at start-up; clap's suggestions and `--version`; JSON logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Output, Stdio};

use c10m_engine::server::ServerConfig;

const BIN: &str = env!("CARGO_BIN_EXE_c10m");

/// `c10m ARGS` with `VARS` and no other `C10M_*` variable from the test's environment.
fn command(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("C10M_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG")
        .args(args)
        .envs(vars.iter().copied());
    cmd
}

fn run(args: &[&str], vars: &[(&str, &str)]) -> Output {
    command(args, vars).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The settings `c10m serve ARGS --print-config` says are in effect.
fn settings(args: &[&str], vars: &[(&str, &str)]) -> ServerConfig {
    let mut all = vec!["serve", "--print-config"];
    all.extend_from_slice(args);
    let o = run(&all, vars);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    ServerConfig::from_toml(std::str::from_utf8(&o.stdout).unwrap()).unwrap()
}

/// Starts `c10m serve --listen 127.0.0.1:0 ARGS` and returns its start-up banner (stdout up to
/// the backend line); the server is stopped when the banner is read.
fn banner(args: &[&str], vars: &[(&str, &str)]) -> String {
    let io = support::io_backend();
    let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--io", io];
    all.extend_from_slice(args);
    let child = command(&all, vars)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = support::KillOnDrop(child);
    let mut text = String::new();
    for line in BufReader::new(server.0.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        text.push_str(&line);
        text.push('\n');
        // The backend line is always printed (the fd-limit line after it only when /proc
        // can be read): stop there rather than wait on a running server's stdout.
        if line.contains("backend:") {
            break;
        }
    }
    assert!(text.contains("listening on ws://"), "{text}");
    text
}

fn toml_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("c10m-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_environment_variable_sets_a_setting() {
    assert!(banner(&[], &[("C10M_SHARDS", "3")]).contains("c10m: 3 shard(s)"));
    let s = settings(
        &[],
        &[
            ("C10M_MAX_FRAME_SIZE", "1_000"),
            (
                "C10M_ALLOWED_ORIGINS",
                "https://a.example,https://b.example",
            ),
            ("C10M_PIN", "true"),
            ("C10M_IO", "auto"),
            ("C10M_DEFLATE_PATHS", "/pubsub,/chat"),
        ],
    );
    assert_eq!(s.deflate_paths, ["/pubsub", "/chat"]);
    assert_eq!(s.max_frame_size, 1000);
    assert_eq!(
        s.allowed_origins,
        ["https://a.example", "https://b.example"]
    );
    assert!(s.pin);
    // A bad value in a variable is refused, naming it.
    let o = run(
        &["serve", "--print-config"],
        &[("C10M_IDLE_TIMEOUT_MS", "soon")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("'soon'"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--idle-timeout-ms"), "{}", stderr(&o));
}

#[test]
fn a_flag_beats_the_variable_which_beats_the_file_which_beats_the_default() {
    let file = toml_file(
        "precedence",
        "shards = 4\nbacklog = 10\nping_interval_ms = 1\npin = true\n",
    );
    let file = file.to_str().unwrap();
    let s = settings(
        &["--config", file, "--shards", "2", "--pin=false"],
        &[("C10M_SHARDS", "3"), ("C10M_BACKLOG", "20")],
    );
    assert_eq!(s.shards, 2, "flag over variable");
    assert!(!s.pin, "flag over file");
    assert_eq!(s.backlog, 20, "variable over file");
    assert_eq!(s.ping_interval_ms, 1, "file over default");
    assert_eq!(s.idle_timeout_ms, ServerConfig::default().idle_timeout_ms);
    // The file itself may come from a variable.
    let s = settings(&[], &[("C10M_CONFIG", file)]);
    assert_eq!(s.shards, 4);
    // And on a running server.
    assert!(banner(&["--shards", "2"], &[("C10M_SHARDS", "3")]).contains("c10m: 2 shard(s)"));
}

#[test]
fn the_settings_once_toml_only_have_flags_and_variables() {
    let s = settings(
        &[
            "--backlog",
            "1k",
            "--read-buffer-size",
            "131_072",
            "--timer-tick-ms",
            "50",
        ],
        &[],
    );
    assert_eq!(
        (s.backlog, s.read_buffer_size, s.timer_tick_ms),
        (1000, 131_072, 50)
    );
    let s = settings(
        &[],
        &[
            ("C10M_BACKLOG", "2k"),
            ("C10M_READ_BUFFER_SIZE", "8192"),
            ("C10M_TIMER_TICK_MS", "10"),
        ],
    );
    assert_eq!(
        (s.backlog, s.read_buffer_size, s.timer_tick_ms),
        (2000, 8192, 10)
    );
    let text = banner(
        &[
            "--backlog",
            "1k",
            "--read-buffer-size",
            "131_072",
            "--timer-tick-ms",
            "50",
            "--shards",
            "1",
        ],
        &[],
    );
    assert!(text.contains("c10m: 1 shard(s)"), "{text}");
}

/// The TOML keys of `ServerConfig`, as its `Deserialize` lists them.
fn config_keys() -> &'static [&'static str] {
    use serde::de::{self, Deserializer, Visitor};
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("only structs"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields noted"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = <ServerConfig as serde::Deserialize>::deserialize(Probe(&mut fields));
    fields
}

#[test]
fn every_setting_is_a_flag_a_variable_and_a_toml_key() {
    let keys = config_keys();
    assert!(keys.len() >= 20, "{keys:?}");
    let o = run(&["serve", "--help"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8(o.stdout).unwrap();
    let flag_of = |key: &str| match key {
        "allowed_origins" => "allowed-origin".to_owned(),
        "deflate_paths" => "deflate-path".to_owned(),
        key => key.replace('_', "-"),
    };
    for key in keys {
        let flag = format!("      --{}", flag_of(key));
        assert!(help.contains(&flag), "no flag for {key}");
        // A secret's variable is shown without its value: `[env: C10M_X]`.
        let var = format!("[env: C10M_{}", key.to_ascii_uppercase());
        assert!(
            help.contains(&format!("{var}=]")) || help.contains(&format!("{var}]")),
            "no variable for {key}"
        );
    }
    // And no flag that is not a setting, besides these.
    let others = [
        "config",
        "print-config",
        "log-format",
        "log-level",
        "help",
        "version",
    ];
    for line in help.lines() {
        let Some(rest) = line.strip_prefix("      --") else {
            continue;
        };
        let flag: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        assert!(
            others.contains(&flag.as_str()) || keys.iter().any(|k| flag_of(k) == flag),
            "--{flag} is not a setting of ServerConfig"
        );
    }
    assert!(help.contains("flag > environment variable > TOML file > default"));
}

#[test]
fn a_mistyped_flag_exits_2_with_a_suggestion() {
    let o = run(&["serve", "--shard", "2"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("a similar argument exists: '--shards'"),
        "{}",
        stderr(&o)
    );
    let o = run(&["serve", "--io", "urng"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("'uring'"), "{}", stderr(&o));
    let o = run(&["serv"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("'serve'"), "{}", stderr(&o));
}

#[test]
fn version() {
    let o = run(&["--version"], &[]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        format!("c10m {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn counts_take_the_one_grammar() {
    assert!(banner(&["--shards", "1k"], &[]).contains("c10m: 1000 shard(s)"));
    let s = settings(
        &[
            "--max-connections-per-shard",
            "1_000_000",
            "--ring-files",
            "20k",
            "--ring-buffers",
            "64",
        ],
        &[],
    );
    assert_eq!(s.max_connections_per_shard, 1_000_000);
    assert_eq!(s.ring_files, Some(20_000));
    assert_eq!(s.ring_buffers, Some(64));
    let file = toml_file("counts", "shards = \"0.5k\"\nmax_frame_size = \"65_536\"\n");
    let s = settings(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!((s.shards, s.max_frame_size), (500, 65_536));
    // Sizes take no suffix: is 16m 16,000,000 bytes or 16 MiB?
    let o = run(&["serve", "--max-frame-size", "16m"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("k, m and g are for counts"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn limits_are_refused_at_start_up() {
    // (arguments, a phrase of the error)
    let cases: &[(&[&str], &str)] = &[
        (
            &["--max-frame-size", "9223372036854775808"],
            "invalid max_frame_size (--max-frame-size, C10M_MAX_FRAME_SIZE): \
             9223372036854775808 is too large (at most 9223372036854775793)",
        ),
        (&["--max-frame-size", "18446744073709551616"], "too large"),
        (
            &["--max-message-size", "18446744073709551615"],
            "max_message_size",
        ),
        (&["--shards", "70k"], "invalid shards"),
        (&["--ring-buffers", "100"], "not a power of two up to 32768"),
        (&["--ring-buffers", "70k"], "too large (at most 65535)"),
        (&["--timer-tick-ms", "0"], "too small (at least 1)"),
        (
            &["--idle-timeout-ms", "18446744073709551615"],
            "invalid idle_timeout_ms",
        ),
        (&["--backlog", "3g"], "too large (at most 2147483647)"),
        (&["--listen", "nowhere"], "invalid value 'nowhere'"),
    ];
    for (args, phrase) in cases {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let o = run(&all, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(phrase), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{args:?} started");
    }
    let file = toml_file("limits", "max_frame_size = 9223372036854775807\n");
    let o = run(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("or max_frame_size in the TOML file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn logs_are_json_on_request() {
    let io = support::io_backend();
    let mut child = command(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
            "--io",
            io,
        ],
        &[("C10M_LOG_FORMAT", "json")],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("listening on ws://"), "{line}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!logs.is_empty());
    for line in logs.lines() {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "not JSON: {line}"
        );
    }
    assert!(logs.contains("\"message\":\"serving\""), "{logs}");
    assert!(logs.contains("\"message\":\"stopped\""), "{logs}");
}

#[test]
fn the_doctor_takes_a_count_and_refuses_a_bad_one() {
    let o = run(&["doctor", "--connections", "1k"], &[]);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.starts_with("host check for 1,000 connections"), "{out}");
    let o = run(&["doctor", "--connections", "lots"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("'lots' is not a count"),
        "{}",
        stderr(&o)
    );
    let o = run(&["doctor", "--only", "net"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown scope"), "{}", stderr(&o));
}

#[test]
fn a_second_signal_ends_the_drain_at_once() {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let io = support::io_backend();
    let child = command(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
            "--io",
            io,
            "--drain-timeout-ms",
            "120000",
            "--close-timeout-ms",
            "120000",
            "--write-queue-limit",
            "268435456",
        ],
        &[],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut server = support::KillOnDrop(child);
    let mut stdout = BufReader::new(server.0.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .split("ws://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("the listening line")
        .to_owned();
    // A client that completes its handshake, has 32 MiB echoed and never reads: the server's
    // close frame waits behind what the socket will not take, and the drain (and the close
    // timeout) would wait 120 s for it.
    let mut client = TcpStream::connect(&addr).unwrap();
    client
        .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = [0u8; 12];
    client.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    let mut frame = vec![0x82, 0xFF, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0];
    frame.resize(frame.len() + (1 << 20), b'x');
    for _ in 0..32 {
        client.write_all(&frame).unwrap();
    }
    let mut stderr = BufReader::new(server.0.stderr.take().unwrap());
    let pid = server.0.id().to_string();
    let kill = || Command::new("kill").args(["-INT", &pid]).status().unwrap();
    kill();
    // Wait until it is draining (it logs so), then signal again.
    let mut log = String::new();
    while !log.contains("closing connections") {
        log.clear();
        assert!(stderr.read_line(&mut log).unwrap() > 0, "no drain logged");
    }
    kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still draining 30 s after a second signal"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("a second signal"), "{rest}");
    drop(client);
}

#[test]
fn settings_that_probably_mean_something_else_are_warned_about() {
    let o = run(
        &["serve", "--print-config", "--max-message-size", "65536"],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("max_frame_size (16777216) is above max_message_size (65536)"),
        "{}",
        stderr(&o)
    );
    for (args, phrase) in [
        (
            &["--ping-interval-ms", "5000", "--idle-timeout-ms", "5000"][..],
            "invalid ping_interval_ms (--ping-interval-ms, C10M_PING_INTERVAL_MS): 5000 must be below idle_timeout_ms (5000)",
        ),
        (&["--handshake-timeout-ms", "0"][..], "0 is too small"),
        (&["--max-connections-per-shard", "0"][..], "0 is too small"),
        (&["--max-frame-size", "0"][..], "0 is too small"),
        (
            &["--timer-tick-ms", "1", "--idle-timeout-ms", "2000000000"][..],
            "invalid idle_timeout_ms",
        ),
    ] {
        let mut all = vec!["serve", "--print-config"];
        all.extend_from_slice(args);
        let o = run(&all, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(phrase), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn a_closed_stdout_does_not_stop_the_server() {
    // A free port (released just before the server binds it).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_c10m"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--shards",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Nobody reads the banner: every line of it meets a broken pipe.
    drop(child.stdout.take());
    let child = support::KillOnDrop(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let stream = loop {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "c10m serve never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let (mut ws, _) = tungstenite::client(format!("ws://127.0.0.1:{port}/echo"), stream).unwrap();
    ws.send(tungstenite::Message::text("still here")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("still here"));
    // Past the start-up checks' output too.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut child = child;
    assert!(child.0.try_wait().unwrap().is_none(), "c10m serve exited");
}
