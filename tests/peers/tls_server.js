// TLS servers from Node's own modules, for frametap's TLS tests (peers we did not
// write):
//
//   h2-only: http2.createSecureServer with allowHTTP1: false: offers only h2 and
//            refuses clients that don't (alert no_application_protocol).
//   http1:   https.createServer with ALPNProtocols ['http/1.1'].
//
// Every answer is "<mode> saw <method> <url> over HTTP/<version>\n". Writes "ready"
// to the ready file once listening.
//
// node tls_server.js MODE HOST PORT CERT KEY READY
"use strict";
const fs = require("fs");
const http2 = require("http2");
const https = require("https");

const [mode, host, port, cert, key, ready] = process.argv.slice(2);
const tls = { cert: fs.readFileSync(cert), key: fs.readFileSync(key) };

function answer(req, res) {
  res.setHeader("content-type", "text/plain");
  res.end(`${mode} saw ${req.method} ${req.url} over HTTP/${req.httpVersion}\n`);
}

let server;
if (mode === "h2-only") {
  server = http2.createSecureServer({ ...tls, allowHTTP1: false }, answer);
} else if (mode === "http1") {
  server = https.createServer({ ...tls, ALPNProtocols: ["http/1.1"] }, answer);
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
server.listen(Number(port), host, () => fs.writeFileSync(ready, "ready"));
