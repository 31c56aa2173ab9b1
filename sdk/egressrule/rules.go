package egressrule

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultPort is the port of a rule that names none: agents mostly speak
// HTTPS, and a rule should not silently open plain HTTP as well.
const DefaultPort = 443

const (
	// maxNameLen is the longest DNS name (RFC 1035, without the final dot).
	maxNameLen = 253
	// MaxLen bounds a rule or target before any parsing: the longest
	// valid one is a bracketed IPv6 literal with a port or a 253-byte name
	// with "*." and a port.
	MaxLen = maxNameLen + len("*.") + len(".:65535")
	// MaxPathLen bounds a rule's path prefix.
	MaxPathLen = 512
	// MaxRuleLen bounds a whole rule: "!", a few methods, the host part
	// and a path.
	MaxRuleLen = len("!") + 128 + MaxLen + MaxPathLen
)

// Rule is one parsed allowlist entry: "[!][METHOD[,METHOD...] ]host[:port][/path-prefix]".
//
// Host rules match that exact name. Wildcard rules ("*.example.com") match
// every name below the suffix at any depth (a.example.com, a.b.example.com)
// but not the suffix itself: the bare domain is usually a different service
// (a website rather than an API), so it needs its own rule. Address rules
// (an IPv4 literal or a bracketed IPv6 literal) match requests for that
// literal address and also allow a name to resolve to it (see Rules.NamesAddr).
// Every rule has exactly one port.
//
// A rule that names methods or a path prefix is about requests, not
// connections: the proxy must read each request to apply it, so it
// terminates TLS for the host (see Rules.Conn and Rules.Request). A deny
// rule ("!") wins over every allow rule: "!host" refuses the host outright,
// "!GET host/admin" refuses those requests only.
type Rule struct {
	// Host is the lower-case name without a trailing dot; for a wildcard rule,
	// the suffix after "*.". Empty for an address rule.
	Host     string
	Wildcard bool
	// Addr is the address of an address rule (IPv4-mapped IPv6 unmapped).
	Addr netip.Addr
	Port uint16
	// Deny makes the rule refuse what it matches, whatever allows it.
	Deny bool
	// Methods are the request methods the rule is about, upper case,
	// sorted, comma-separated ("GET,HEAD"); "" is every method.
	Methods string
	// Path is the prefix of the request path the rule is about ("" is
	// every path). It is a plain prefix of the decoded path: end it with
	// "/" to mean a directory and what is below it.
	Path string
}

// String is the rule's canonical form: "host:port", "*.suffix:port",
// "1.2.3.4:port" or "[v6]:port", after "!" and the methods and before the
// path when the rule has them.
func (r Rule) String() string {
	p := strconv.Itoa(int(r.Port))
	var hp string
	switch {
	case r.Addr.IsValid():
		hp = netip.AddrPortFrom(r.Addr, r.Port).String()
	case r.Wildcard:
		hp = "*." + r.Host + ":" + p
	default:
		hp = r.Host + ":" + p
	}
	if !r.Deny && r.Methods == "" && r.Path == "" {
		return hp
	}
	var b strings.Builder
	if r.Deny {
		b.WriteByte('!')
	}
	if r.Methods != "" {
		b.WriteString(r.Methods)
		b.WriteByte(' ')
	}
	b.WriteString(hp)
	b.WriteString(r.Path)
	return b.String()
}

// Requests reports whether the rule is about requests (it names methods or
// a path), so that applying it needs the proxy to read them.
func (r Rule) Requests() bool { return r.Methods != "" || r.Path != "" }

// ParseRule parses "[!][METHOD[,METHOD...] ]host[:port][/path-prefix]": the
// host an exact DNS name, "*.suffix", an IPv4 literal or a bracketed IPv6
// literal, optionally followed by a port (DefaultPort otherwise). Names are
// case-insensitive and one trailing dot is ignored; so are methods. Every
// entry without "!", methods or a path parses as it always did.
func ParseRule(s string) (Rule, error) {
	r, err := parseRule(s)
	if err != nil {
		return Rule{}, fmt.Errorf("%.80q: %w", s, err)
	}
	return r, nil
}

func parseRule(s string) (Rule, error) {
	if len(s) > MaxRuleLen {
		return Rule{}, fmt.Errorf("rule is %d bytes long, more than %d", len(s), MaxRuleLen)
	}
	var r Rule
	rest := s
	if after, ok := strings.CutPrefix(rest, "!"); ok {
		r.Deny, rest = true, after
	}
	if i := strings.IndexByte(rest, ' '); i >= 0 {
		m, err := parseMethods(rest[:i])
		if err != nil {
			return Rule{}, err
		}
		r.Methods, rest = m, rest[i+1:]
	}
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		if err := checkRulePath(rest[i:]); err != nil {
			return Rule{}, err
		}
		r.Path, rest = rest[i:], rest[:i]
	}
	h, port, err := splitHostPort(rest, DefaultPort)
	if err != nil {
		return Rule{}, err
	}
	if h.wildcard && h.addr.IsValid() {
		return Rule{}, errors.New("a wildcard matches names, not addresses")
	}
	r.Host, r.Wildcard, r.Addr, r.Port = h.name, h.wildcard, h.addr, port
	return r, nil
}

// host is a validated host part: either a name or an address.
type host struct {
	name     string     // lower case, no trailing dot; the suffix for a wildcard
	wildcard bool       // name was "*.name"
	addr     netip.Addr // valid for an address literal, unmapped
}

// splitHostPort validates "host[:port]" (IPv6 bracketed) and returns the host
// and the port, defaultPort when none is given (0: a port is required).
func splitHostPort(s string, defaultPort uint16) (host, uint16, error) {
	switch {
	case s == "":
		return host{}, 0, errors.New("empty host")
	case len(s) > MaxLen:
		return host{}, 0, fmt.Errorf("host is %d bytes long, more than a DNS name can be", len(s))
	case strings.IndexFunc(s, notPrintableASCII) >= 0:
		return host{}, 0, errors.New("host has characters a DNS name cannot have")
	}
	hostPart, portPart, hasPort := s, "", false
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return host{}, 0, errors.New("unclosed [")
		}
		hostPart, portPart = s[1:end], s[end+1:]
		if portPart != "" {
			if !strings.HasPrefix(portPart, ":") {
				return host{}, 0, errors.New("want [ipv6] or [ipv6]:port")
			}
			portPart, hasPort = portPart[1:], true
		}
		a, err := netip.ParseAddr(hostPart)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return host{}, 0, fmt.Errorf("[%s] is not an IPv6 address", hostPart)
		}
		port, err := pickPort(portPart, hasPort, defaultPort)
		if err != nil {
			return host{}, 0, err
		}
		return host{addr: a.Unmap()}, port, nil
	}
	switch strings.Count(s, ":") {
	case 0:
	case 1:
		i := strings.IndexByte(s, ':')
		hostPart, portPart, hasPort = s[:i], s[i+1:], true
	default:
		return host{}, 0, errors.New("write an IPv6 address in brackets: [addr] or [addr]:port")
	}
	port, err := pickPort(portPart, hasPort, defaultPort)
	if err != nil {
		return host{}, 0, err
	}
	h, err := parseName(hostPart)
	if err != nil {
		return host{}, 0, err
	}
	return h, port, nil
}

func pickPort(p string, given bool, defaultPort uint16) (uint16, error) {
	if !given {
		if defaultPort == 0 {
			return 0, errors.New("a port is required (host:port)")
		}
		return defaultPort, nil
	}
	if p == "" || len(p) > 5 || p[0] == '0' || strings.Trim(p, "0123456789") != "" {
		return 0, fmt.Errorf("port %.10q is not a number from 1 to 65535", p)
	}
	n, _ := strconv.Atoi(p)
	if n > 65535 {
		return 0, fmt.Errorf("port %.10q is not a number from 1 to 65535", p)
	}
	return uint16(n), nil
}

// parseName validates an unbracketed host: an IPv4 literal, a DNS name or
// "*." and a DNS name.
func parseName(s string) (host, error) {
	name := strings.ToLower(strings.TrimSuffix(s, "."))
	wildcard := false
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		name, wildcard = rest, true
	}
	if a, err := netip.ParseAddr(name); err == nil && a.Is4() {
		return host{addr: a, wildcard: wildcard}, nil
	}
	switch {
	case name == "" && !wildcard:
		return host{}, errors.New("empty host")
	case name == "" || name == "*":
		return host{}, errors.New("a wildcard needs a suffix, as in *.example.com")
	}
	if len(name) > maxNameLen {
		return host{}, fmt.Errorf("name is %d bytes long, more than %d", len(name), maxNameLen)
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if err := checkLabel(l); err != nil {
			return host{}, err
		}
	}
	if last := labels[len(labels)-1]; strings.Trim(last, "0123456789") == "" {
		// Resolvers read "127.1" or "0x7f.1" as addresses; only the
		// dotted-quad form is an address here, and it was handled above.
		return host{}, errors.New("not an IPv4 address (a.b.c.d) nor a DNS name")
	}
	return host{name: name, wildcard: wildcard}, nil
}

func checkLabel(l string) error {
	switch {
	case l == "":
		return errors.New("empty label (two dots in a row, or a leading dot)")
	case l == "*" || strings.Contains(l, "*"):
		return errors.New(`"*" is only allowed as the whole first label ("*.example.com")`)
	case len(l) > 63:
		return fmt.Errorf("label %.20q… is %d bytes long, more than 63", l, len(l))
	case l[0] == '-' || l[len(l)-1] == '-':
		return fmt.Errorf("label %q starts or ends with '-'", l)
	}
	for _, c := range []byte(l) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("label %q has %q; names use letters, digits and '-'", l, c)
		}
	}
	return nil
}

func notPrintableASCII(r rune) bool { return r <= ' ' || r >= 0x7f }

// Rules is a parsed allowlist. The zero value and a nil *Rules allow nothing.
// A Rules is immutable, so one can be shared between goroutines.
type Rules struct {
	list  []Rule
	exact map[namePort]string
	wild  map[namePort]string // keyed by suffix
	addrs map[netip.AddrPort]string
	// requests are the allow rules with methods or a path, deny the deny
	// rules: few, so they are scanned.
	requests []Rule
	deny     []Rule
	// methods: some rule names methods (see NamesMethods).
	methods bool
}

type namePort struct {
	name string
	port uint16
}

// ParseRules parses an allowlist. Duplicates (after normalisation) are kept
// once. The error names the first bad rule and its position.
func ParseRules(rules []string) (*Rules, error) {
	rs := &Rules{
		exact: map[namePort]string{},
		wild:  map[namePort]string{},
		addrs: map[netip.AddrPort]string{},
	}
	seen := map[string]bool{}
	for i, s := range rules {
		r, err := parseRule(s)
		if err != nil {
			return nil, fmt.Errorf("rule %d (%.80q): %w", i+1, s, err)
		}
		str := r.String()
		if seen[str] {
			continue
		}
		seen[str] = true
		rs.list = append(rs.list, r)
		rs.methods = rs.methods || r.Methods != ""
		switch {
		case r.Deny:
			rs.deny = append(rs.deny, r)
		case r.Requests():
			rs.requests = append(rs.requests, r)
		case r.Addr.IsValid():
			rs.addrs[netip.AddrPortFrom(r.Addr, r.Port)] = str
		case r.Wildcard:
			rs.wild[namePort{r.Host, r.Port}] = str
		default:
			rs.exact[namePort{r.Host, r.Port}] = str
		}
	}
	return rs, nil
}

// MustParseRules is ParseRules for rules known to be good (tests, constants).
func MustParseRules(rules ...string) *Rules {
	rs, err := ParseRules(rules)
	if err != nil {
		panic(err)
	}
	return rs
}

// Len is the number of distinct rules.
func (rs *Rules) Len() int {
	if rs == nil {
		return 0
	}
	return len(rs.list)
}

// List returns the rules, in the order given.
func (rs *Rules) List() []Rule {
	if rs == nil {
		return nil
	}
	return append([]Rule(nil), rs.list...)
}

// Strings returns the rules in canonical form, in the order given.
func (rs *Rules) Strings() []string {
	if rs == nil {
		return nil
	}
	out := make([]string, len(rs.list))
	for i, r := range rs.list {
		out[i] = r.String()
	}
	return out
}

// Match reports the rule that allows host:port, in canonical form. host may
// be a name (any case, one trailing dot ignored), an IPv4 literal or an IPv6
// literal with or without brackets. An exact rule wins over a wildcard, and
// a longer wildcard suffix over a shorter one.
//
// Match is about connections (see Conn): a host that only rules with
// methods or a path allow matches the first of them, and a host a "!host"
// rule refuses matches nothing.
func (rs *Rules) Match(host string, port int) (rule string, ok bool) {
	v := rs.Conn(host, port)
	return v.Rule, v.Allowed
}

// matchHost is Match over the rules about whole hosts.
func (rs *Rules) matchHost(host string, port int) (rule string, ok bool) {
	if rs == nil || port < 1 || port > 65535 {
		return "", false
	}
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if a, err := netip.ParseAddr(h); err == nil {
		r, ok := rs.addrs[netip.AddrPortFrom(a.WithZone("").Unmap(), uint16(port))]
		return r, ok
	}
	p := uint16(port)
	if r, ok := rs.exact[namePort{h, p}]; ok {
		return r, true
	}
	// The wildcard "*.s" matches names that end in ".s", so try every proper
	// suffix that starts after a dot, longest first.
	for i := strings.IndexByte(h, '.'); i >= 0; {
		suffix := h[i+1:]
		if r, ok := rs.wild[namePort{suffix, p}]; ok {
			return r, true
		}
		j := strings.IndexByte(suffix, '.')
		if j < 0 {
			break
		}
		i += j + 1
	}
	return "", false
}

// NamesAddr reports the address rule that names ap literally. Such a rule
// is what lets a name resolve to an address that is otherwise unsafe: the
// operator has said that this very address and port may be reached.
func (rs *Rules) NamesAddr(ap netip.AddrPort) (rule string, ok bool) {
	if rs == nil || !ap.IsValid() {
		return "", false
	}
	a := ap.Addr().WithZone("").Unmap()
	r, ok := rs.addrs[netip.AddrPortFrom(a, ap.Port())]
	return r, ok
}

// ParseTarget validates a destination "host:port" (IPv6 bracketed) as a
// request names it, with the same grammar as a rule's host part: name is
// lower case without a trailing dot, or addr is valid for an address
// literal; port is defaultPort when none is given (0: a port is required).
// A wildcard is not a destination.
func ParseTarget(s string, defaultPort uint16) (name string, addr netip.Addr, port uint16, err error) {
	h, port, err := splitHostPort(s, defaultPort)
	if err == nil && h.wildcard {
		err = errors.New("a wildcard is not a host")
	}
	if err != nil {
		return "", netip.Addr{}, 0, err
	}
	return h.name, h.addr, port, nil
}
