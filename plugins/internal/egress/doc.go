// Package egress is a bottle's egress proxy: the only way out of a bottle's
// network. It allows HTTP CONNECT tunnels and plain-HTTP requests to the
// host[:port] rules of one bottle's allowlist, refuses everything else with a
// one-line reason the agent can act on, resolves names itself (so a bottle
// needs no resolver of its own) and refuses allowed names that resolve to
// loopback, link-local, metadata and similar addresses unless a rule names
// that address. Every attempt is written to an event log as one JSON line,
// with the address dialed next to the name asked for — including requests
// Go's HTTP server answers itself before any handler runs (reject.go).
//
// For hosts a credential goes to, or an entry about requests (methods, a
// path) names, the proxy terminates the bottle's TLS with a leaf of the
// bottle's own CA (ca.go) and reads each request (intercept.go): it judges
// it by the rules, puts the credentials of that host on it and audits each
// injection, and audits every placeholder of another credential it sees
// (the request goes on unchanged); see inject.go. Every other CONNECT is a
// plain tunnel, untouched, whose contents the proxy cannot see.
//
// The rules live in a JSON file (RulesFile) that a Watcher re-reads while the
// proxy runs, so an approved request takes effect for the next connection.
//
// The rules' grammar and safety checks are sdk/egressrule, the same the core
// vets requested rules with; Event is sdk/egresslog's (sdk.EgressEvent), the
// shape the core reads, and a credential's rules are sdk/credential's. This
// package imports neither package sdk nor anything that links gRPC: the
// kubernetes backend's in-pod helper is built with it (TestNoPluginMachinery).
package egress
