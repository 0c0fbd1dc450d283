// The `/pubsub` application of `c10m serve` (engine/src/server/apps.rs), written on
// uWebSockets, so the fan-out benchmark can run the load generator's broadcast mode against both
// servers unchanged. Built outside the repository by benches/uws/build.sh.
//
//   pubsub [PORT]     listen on 127.0.0.1:PORT (0, the default, picks a free port), one thread
//
// The protocol, as c10m speaks it, byte for byte:
//
//   client sends             effect
//   sub <topic>              subscribe; answer `ok sub <topic>`
//   unsub <topic>            unsubscribe; answer `ok unsub <topic>`
//   pub <topic> <payload>    every subscriber, the sender too if subscribed, receives the text
//                            message `msg <topic> <payload>` (`msg <topic> ` when no payload)
//
// Topics are 1-128 bytes of UTF-8 without spaces, else `err invalid topic`; anything else is
// answered `err unknown command (sub, unsub, pub)`. `/pubsub?topic=a&topic=b` subscribes on
// open (the query is not percent-decoded, as in c10m). Only the path /pubsub upgrades.
//
// Its settings are those of uWebSockets' examples/EchoServer.cpp (the echo peer), so both uWS
// programs of the benchmark run alike: 16 s idle timeout with automatic pings, 100 MiB of
// backpressure before messages are dropped, no compression (the load generator offers none).
// On start it prints `listening on ws://127.0.0.1:PORT/`, the line `c10m serve` prints, so the
// scripts wait for both the same way (scripts/lib/listen-addr.sh).

#include "App.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

constexpr std::size_t kMaxTopic = 128;

// What std::str::from_utf8 accepts: shortest forms only, no surrogates, nothing past U+10FFFF.
bool valid_utf8(std::string_view s) {
    const auto *p = reinterpret_cast<const unsigned char *>(s.data());
    const auto *end = p + s.size();
    while (p < end) {
        unsigned char c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        int n;
        unsigned char lo = 0x80, hi = 0xbf;  // range of the second byte
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            if (c == 0xe0) lo = 0xa0;
            if (c == 0xed) hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f;
        } else {
            return false;
        }
        if (end - p <= n) return false;
        if (p[1] < lo || p[1] > hi) return false;
        for (int i = 2; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) return false;
        }
        p += n + 1;
    }
    return true;
}

bool valid_topic(std::string_view t) {
    return !t.empty() && t.size() <= kMaxTopic && t.find(' ') == std::string_view::npos &&
           valid_utf8(t);
}

// Splits at the first space: (before, after); no space gives (all, "").
std::pair<std::string_view, std::string_view> split_space(std::string_view s) {
    auto i = s.find(' ');
    if (i == std::string_view::npos) return {s, {}};
    return {s.substr(0, i), s.substr(i + 1)};
}

struct PerSocketData {
    // The upgrade request's query string, kept from the upgrade to `open` (the request is gone
    // by then) and released there.
    std::string query;
};

uWS::App *app = nullptr;

}  // namespace

int main(int argc, char **argv) {
    int port = 0;
    if (argc > 2 || (argc == 2 && (port = std::atoi(argv[1])) <= 0 && std::string_view(argv[1]) != "0")) {
        std::fprintf(stderr, "usage: %s [PORT]\n", argv[0]);
        return 2;
    }

    uWS::App server;
    app = &server;
    server.ws<PerSocketData>("/pubsub", {
        .compression = uWS::DISABLED,
        // c10m's /pubsub limit (PUBSUB_MAX_MESSAGE, 64 KiB): both close a larger message alike.
        .maxPayloadLength = 64 * 1024,
        .idleTimeout = 16,
        .maxBackpressure = 100 * 1024 * 1024,
        .closeOnBackpressureLimit = false,
        .resetIdleTimeoutOnSend = false,
        .sendPingsAutomatically = true,
        .upgrade = [](auto *res, auto *req, auto *context) {
            res->template upgrade<PerSocketData>({.query = std::string(req->getQuery())},
                                                  req->getHeader("sec-websocket-key"),
                                                  req->getHeader("sec-websocket-protocol"),
                                                  req->getHeader("sec-websocket-extensions"),
                                                  context);
        },
        .open = [](auto *ws) {
            auto *data = ws->getUserData();
            std::string_view rest = data->query;
            while (!rest.empty()) {
                auto amp = rest.find('&');
                std::string_view pair = rest.substr(0, amp);
                rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
                if (pair.substr(0, 6) == "topic=" && valid_topic(pair.substr(6))) {
                    ws->subscribe(pair.substr(6));
                }
            }
            std::string().swap(data->query);
        },
        .message = [](auto *ws, std::string_view message, uWS::OpCode opCode) {
            auto [command, rest] = split_space(message);
            if (command == "pub") {
                auto [topic, payload] = split_space(rest);
                if (!valid_topic(topic)) {
                    ws->send("err invalid topic", uWS::OpCode::TEXT);
                    return;
                }
                // c10m publishes `msg TOPIC PAYLOAD` with the publisher's opcode (a binary
                // payload may not be UTF-8); App::publish reaches every subscriber, the sender
                // included.
                static std::string frame;
                frame.assign("msg ");
                frame.append(topic).append(" ").append(payload);
                app->publish(topic, frame,
                             opCode == uWS::OpCode::BINARY ? uWS::OpCode::BINARY : uWS::OpCode::TEXT);
            } else if (command == "sub" || command == "unsub") {
                if (!valid_topic(rest)) {
                    ws->send("err invalid topic", uWS::OpCode::TEXT);
                    return;
                }
                if (command == "sub") {
                    ws->subscribe(rest);
                } else {
                    ws->unsubscribe(rest);
                }
                std::string answer = "ok ";
                answer.append(command).append(" ").append(rest);
                ws->send(answer, uWS::OpCode::TEXT);
            } else {
                ws->send("err unknown command (sub, unsub, pub)", uWS::OpCode::TEXT);
            }
        },
    });
    server.listen("127.0.0.1", port, [](auto *listen_socket) {
        if (listen_socket) {
            int bound = us_socket_local_port(0, reinterpret_cast<us_socket_t *>(listen_socket));
            std::printf("listening on ws://127.0.0.1:%d/\n", bound);
            std::fflush(stdout);
        } else {
            std::fprintf(stderr, "pubsub: cannot listen on 127.0.0.1\n");
        }
    });
    server.run();
    return 1;  // run() returns only when nothing is left to serve: the listen failed
}
