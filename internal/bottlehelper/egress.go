package bottlehelper

import "fmt"

// askEgress is the line that asks the operator for a host.
const askEgress = "bottle request egress HOST[:PORT] --reason WHY"

// egressState says what this bottle can reach, from what the backend put in
// its environment: a bottle with an egress allowlist gets a proxy
// (HTTPS_PROXY), one without gets no network at all. The proxy's log of
// refusals lives on the host (bot-bottle audit IDENTITY --egress), out of
// the bottle's reach, so this cannot list them.
func egressState(getenv func(string) string) string {
	proxy := ""
	for _, name := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"} {
		if v := getenv(name); v != "" {
			proxy = v
			break
		}
	}
	if proxy == "" {
		return fmt.Sprintf("Egress is off: this bottle has no network (no proxy in its environment), so names do not resolve. Ask the operator for a host with: %s", askEgress)
	}
	return fmt.Sprintf("Egress goes through the bottle's proxy (%s): only allowed hosts are reachable, a refused one answers 403 Forbidden. Ask the operator for a host with: %s (the operator sees every refusal: bot-bottle audit IDENTITY --egress)", clean(proxy), askEgress)
}
