// Package agenttest holds integration tests of the built-in agents: each
// agent's Dockerfile, as embedded in the binary, is built and run on the real
// Docker Engine and checked against what its agent.hcl promises.
package agenttest
