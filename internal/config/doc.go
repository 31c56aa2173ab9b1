// Package config reads bot-bottle's configuration: plugins.hcl (which backend
// to use and each plugin's path, checksum pin and free-form config) and agent
// definitions (agents/<name>/agent.hcl), both the built-ins embedded in the
// binary and the user's own under $BOT_BOTTLE_HOME/agents/.
//
// Every error that comes from an HCL file is one line and starts with
// file:line:col, so a user can jump straight to the mistake.
package config
