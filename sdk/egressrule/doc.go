// Package egressrule is the grammar of a bottle's egress allowlist entries
// and the checks a requested entry must pass before anyone may approve it
// (CheckRequested: no loopback, link-local, cloud metadata or public-suffix
// wildcards).
//
// An entry is "[!][METHOD[,METHOD...] ]host[:port][/path-prefix]":
//
//	api.github.com                    the host, port 443, any request
//	*.example.com:8443                every name below example.com
//	[2001:db8::1]:80, 10.0.0.7        address literals
//	GET,HEAD api.github.com/repos/acme/   only those methods, under that path
//	!api.github.com/admin             deny: wins over every allow entry
//	!db.corp.example                  deny the host outright
//
// Methods are HTTP's and WebDAV's, any case, canonical upper case and
// sorted. A path is a plain prefix of the request's decoded path, written
// unescaped (letters, digits and -._~!$&()*+,;=:@/), in canonical form (no
// empty, "." or ".." segment); a request path that is not canonical is
// refused wherever a path entry applies, as read literally and as a lenient
// server reads it ("\" for "/", ";params" dropped), and so is one with an
// encoded '.', '/' or '\' left after decoding. A deny entry's path matches
// in any case and under either reading (servers that route without regard
// to case or parameters must not walk around it); an allow entry's path
// only in its own case and under both. An entry with methods or a path is
// about requests (Rule.Requests): Rules.Conn says a connection must have its
// requests judged one by one with Rules.Request, so a proxy reads them (it
// terminates TLS for that host). Deny entries win: a "!host" entry refuses
// the connection, a "!" entry with methods or a path the requests it
// matches. An entry about requests on an address literal judges requests
// that name the address (CONNECT 10.0.0.5:443); a name that resolves to it
// is judged by that name's entries ("!10.0.0.5" alone refuses such names). Every entry without "!", methods or a path parses and matches
// exactly as before they existed. The core vets agent definitions and bottles' requests with
// it; every backend that enforces egress matches with the same Rules, so a
// rule means the same thing wherever it is approved and enforced.
//
// It imports only the standard library and golang.org/x/net/publicsuffix,
// so that it can go into a small static proxy binary.
package egressrule
