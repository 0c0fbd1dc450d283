// Force-included (g++ -include) ahead of a copy of uWebSockets' examples/EchoServer.cpp, in
// which benches/uws/build.sh has replaced the fixed port 9001 by c10m_uws_port(): the port
// comes from the environment, so a benchmark can run the example on a port it knows is free.
//
//   UWS_PORT=PORT EchoServer      (9001 when UWS_PORT is unset, as upstream)
#pragma once
#include <cstdlib>

static inline int c10m_uws_port() {
    const char *port = std::getenv("UWS_PORT");
    return port && *port ? std::atoi(port) : 9001;
}
