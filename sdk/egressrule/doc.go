// Package egressrule is the grammar of a bottle's egress allowlist entries
// ("host[:port]", "*.domain[:port]", an IPv4 or bracketed IPv6 literal) and
// the checks a requested entry must pass before anyone may approve it
// (CheckRequested: no loopback, link-local, cloud metadata or public-suffix
// wildcards). The core vets agent definitions and bottles' requests with
// it; every backend that enforces egress matches with the same Rules, so a
// rule means the same thing wherever it is approved and enforced.
//
// It imports only the standard library and golang.org/x/net/publicsuffix,
// so that it can go into a small static proxy binary.
package egressrule
