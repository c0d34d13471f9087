"""A gRPC server and client from grpcio (peers we did not write), for frametap's
HTTP/2 tests. No .proto: the methods take and return raw bytes.

  server HOST PORT CERT KEY READY   frametap.Echo/Say (unary: b"echo:" + request,
                                    trailer x-echo-length) and frametap.Echo/Chat
                                    (bidirectional: each message echoed)
  client NAME ADDR PORT CAFILE      calls both over TLS to ADDR with NAME as the
                                    server name; prints one JSON line
"""
import json
import sys
from concurrent import futures

import grpc

SERVICE = "frametap.Echo"


def server(host, port, cert, key, ready):
    def say(request, context):
        context.set_trailing_metadata((("x-echo-length", str(len(request))),))
        return b"echo:" + request

    def chat(requests, context):
        for message in requests:
            yield b"echo:" + message

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Say": grpc.unary_unary_rpc_method_handler(say),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        },
    )
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    s.add_generic_rpc_handlers((handler,))
    with open(key, "rb") as k, open(cert, "rb") as c:
        credentials = grpc.ssl_server_credentials([(k.read(), c.read())])
    s.add_secure_port(f"{host}:{port}", credentials)
    s.start()
    with open(ready, "w") as f:
        f.write("ready")
    s.wait_for_termination()


def client(name, addr, port, cafile):
    with open(cafile, "rb") as f:
        credentials = grpc.ssl_channel_credentials(f.read())
    options = [
        ("grpc.ssl_target_name_override", name),
        ("grpc.default_authority", f"{name}:{port}"),
        ("grpc.enable_http_proxy", 0),
    ]
    with grpc.secure_channel(f"{addr}:{port}", credentials, options=options) as channel:
        say = channel.unary_unary(f"/{SERVICE}/Say")
        answer, call = say.with_call(b"hello grpc", timeout=10)
        chat = channel.stream_stream(f"/{SERVICE}/Chat")
        replies = [r.decode() for r in chat(iter([b"one", b"two", b"three"]), timeout=10)]
    print(
        json.dumps(
            {
                "say": answer.decode(),
                "trailers": dict(call.trailing_metadata()),
                "chat": replies,
            }
        )
    )


if __name__ == "__main__":
    {"server": server, "client": client}[sys.argv[1]](*sys.argv[2:])
