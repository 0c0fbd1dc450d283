//! The help text.

/// `c10m-loadtest --help`.
pub const USAGE: &str = "\
usage: c10m-loadtest <connect|idle|echo|broadcast> [options]

scenarios:
  connect     open N connections at a controlled rate; connect and handshake latency, errors
  idle        hold N connections for --duration, answering pings; who survived, why others closed
  echo        each connection keeps --window messages in flight, or sends --msg-rate per second
              (fixed rate, latency measured from the intended send time); messages/s, round trip
  broadcast   N subscribers on a /pubsub topic, --publishers P at --publish-rate each; deliveries/s,
              delivery latency (from the intended publish time), missing, duplicated and reordered
              messages per subscriber

where and how many:
  --target ADDR[,ADDR]      IP:PORT or IP:PORT-PORT, several allowed (default 127.0.0.1:9001);
                            connections are spread over them
  --allow-remote            permit non-loopback targets and source addresses (refused otherwise)
  --path PATH               request path (default /echo; broadcast: /pubsub)
  -n, --connections N       connections (broadcast: subscribers) (default 1000; at most 10M);
                            k and m suffixes: 30k, 1m
  --rate R                  connections opened per second, all processes together (default 5000)
  --max-pending N           connects/handshakes in progress at once, per thread (default 1000)
  --source-ips LIST         bind sources round-robin over these, with IP_BIND_ADDRESS_NO_PORT:
                            127.0.0.2-127.0.0.254, 127.0.0.2-9, comma lists. One (source,
                            target) pair slows sharply past ~15k connections on Linux.
  --procs P                 worker processes, each under its own fd limit (default: as many as
                            the fd limit needs; 1 runs in this process)
  --threads T               event-loop threads per process (default: cores / processes, >= 1)

time (a bare number is seconds; also 500ms, 10s, 2m):
  --duration D              hold/drive time after every connection is open (default 10s;
                            connect: 0); at most 24h
  --ramp-timeout D          stop opening connections after this (default: N/rate + 30s)
  --connect-timeout D       per-connection limit for TCP connect plus handshake (default 10s)
  --drain D                 after driving, wait at most this long for replies/deliveries (default 5s)
  --close-timeout D         time the server has to answer our close frames (default 2s plus
                            1s per 10,000 connections)
  --ping-interval D         also send pings from the client when the server is silent this long
  --idle-timeout D          close connections on which nothing arrived for this long

messages:
  --size BYTES              message payload size (echo: at least 20; default 64)
  --window W                echo: messages in flight per connection (default 1)
  --msg-rate R              echo: messages per second per connection, fixed rate (instead of --window)
  --publishers P            broadcast: publishing connections (default 1; at most 1000)
  --publish-rate R          broadcast: messages per second per publisher (default 10)
  --topic T                 broadcast: topic name, [A-Za-z0-9._-]{1,128} (default bench)

output:
  --json                    print the final report as JSON on stdout (the text report goes to stderr)
  --html FILE               write a self-contained HTML report with charts over time
  --server-pid PID[,PID]    sample these server processes' RSS and CPU, and the kernel's socket
                            memory (/proc/meminfo Slab, /proc/net/sockstat): bytes per connection
  --quiet                   no progress line on stderr

Exit status: 0 when every connection opened and nothing was lost, mismatched or refused;
1 when the run finished with failures (the report says which); 2 on bad usage; 3 when the run
could not be carried out.
";
