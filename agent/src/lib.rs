//! frametap agent: loads the eBPF capture programs, accepts the connections they
//! redirect, and relays each one to its original destination.
//!
//! Modules, one job each:
//! * [`config`]: command line and TOML settings, validated.
//! * [`preflight`]: is this machine able to run us (root, BTF, cgroup2)?
//! * [`cgroup`]: finding, creating and entering cgroup v2 directories.
//! * [`capture`]: the eBPF side: load, configure, attach, original-destination lookups.
//! * [`containers`]: running containers (id, name, cgroup, namespace), by the
//!   runtime's API ([`runtime_api`]) or the cgroup tree.
//! * [`container_id`]: which container a cgroup path names.
//! * [`container_selection`]: keeps `--container` names attached as they come and go.
//! * [`netns`]: entering another network namespace to create a socket there.
//! * [`netns_listeners`]: the agent's listeners inside containers' namespaces:
//!   found, opened and closed while running.
//! * [`origin`]: a connection's cgroup, network namespace and container.
//! * [`context`]: what a connection task works with: settings, shared state, the
//!   accepted connection's facts, the upstream connect.
//! * [`proxy`]: the accept loop and the life of one redirected connection.
//! * [`intercept`]: sniff the first bytes; TLS interception, and the async glue that
//!   feeds an intercepted connection's bytes to its session (the sans-IO session
//!   layer is `frametap-session`, the protocol parsers `frametap-proto`).
//! * [`tls`]: the CA, leaf certificates, rustls configurations of both legs.
//! * [`recorder`]: hands records to the store's writer (group commit, WAL).
//! * [`events`]: the live stream of persisted records, fanned out to subscribers.
//! * [`control`]: the control socket the API process talks to.
//! * [`relay`]: byte relay between two sockets (half-close and resets respected).
//! * [`replay`]: recorded conversations played again, recorded as new connections.
//! * [`exec`]: run one command inside a captured cgroup.
//! * [`attached`]: asks the kernel whether (and where) a frametap agent captures.
//! * [`hint`]: the `exec` command line the agent suggests at start.
pub mod attached;
pub mod capture;
pub mod cgroup;
pub mod config;
pub mod container_id;
pub mod container_selection;
pub mod containers;
pub mod context;
pub mod control;
pub mod events;
pub mod exec;
pub mod fd_budget;
pub mod hint;
pub mod intercept;
pub mod live;
pub mod memory;
pub mod netns;
pub mod netns_listeners;
pub mod origin;
pub mod preflight;
pub mod proxy;
pub mod recorder;
pub mod relay;
pub mod replay;
pub mod runtime_api;
pub mod tls;
