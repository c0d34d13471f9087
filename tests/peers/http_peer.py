"""An HTTP/1.1 test server whose bodies are known in advance, for the body tests.

  GET  /cl/N        N bytes of DIGITS with Content-Length
  GET  /chunked/N   N bytes of DIGITS, chunked in pieces of 1000
  GET  /gzip        GZIP_JSON, Content-Encoding: gzip (whatever the client accepts)
  GET  /status/C    status C with a short text body
  POST /echo        the request body (Content-Length or chunked), same Content-Type

Usage: http_peer.py ADDRESS PORT
"""
import gzip
import http.server
import sys

DIGITS = b"0123456789"
GZIP_JSON = b'{"frametap":"decoded","n":[1,2,3]}'


def digits(n):
    return (DIGITS * (n // 10 + 1))[:n]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_body(self, status, body, content_type="text/plain", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        if parts[0] == "cl":
            self.send_body(200, digits(int(parts[1])))
        elif parts[0] == "chunked":
            body = digits(int(parts[1]))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 1000):
                piece = body[i : i + 1000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        elif parts[0] == "gzip":
            self.send_body(
                200,
                gzip.compress(GZIP_JSON),
                "application/json",
                [("Content-Encoding", "gzip")],
            )
        elif parts[0] == "status":
            self.send_body(int(parts[1]), b"status %s\n" % parts[1].encode())
        else:
            self.send_body(404, b"no such test path\n")

    def do_POST(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_body(
            200, body, self.headers.get("Content-Type", "application/octet-stream")
        )


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler)
    print("ready", flush=True)
    server.serve_forever()
