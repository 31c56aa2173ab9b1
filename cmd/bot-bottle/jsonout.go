package main

import (
	"github.com/bot-bottle/bot-bottle/internal/config"
	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/pluginhost"
)

// The --json shapes. One convention for every command, so that a script
// written against one reads the others: snake_case names that do not
// change; a list is always a list ([] when empty, never null); a string or
// number that does not apply is left out; times are RFC 3339. The shapes
// are pinned by testdata/script/json_shapes.txtar.

// agentJSON is one agent as `agents --json` prints it.
type agentJSON struct {
	Name           string   `json:"name"`
	Description    string   `json:"description,omitempty"`
	Source         string   `json:"source"`
	Image          string   `json:"image,omitempty"`
	Dockerfile     string   `json:"dockerfile,omitempty"`
	Command        []string `json:"command"`
	ResumeCommand  []string `json:"resume_command"`
	Workdir        string   `json:"workdir"`
	Env            []string `json:"env"`
	TranscriptPath string   `json:"transcript_path,omitempty"`
	Egress         []string `json:"egress"`
	CapAdd         []string `json:"cap_add"`
	User           string   `json:"user,omitempty"`
	// Credentials say how each goes on the wire and where its value comes
	// from on the host; never a value.
	Credentials []credentialJSON `json:"credentials"`
}

// credentialJSON is one credential block of an agent.
type credentialJSON struct {
	Name   string   `json:"name"`
	Env    string   `json:"env"`
	Hosts  []string `json:"hosts"`
	Header string   `json:"header"`
	Prefix string   `json:"prefix,omitempty"`
	Source string   `json:"source"`
}

func agentsJSON(agents []config.Agent) []agentJSON {
	out := []agentJSON{}
	for _, a := range agents {
		out = append(out, agentJSON{Name: a.Name, Description: a.Description, Source: a.Source, Image: a.Image,
			Dockerfile: a.Dockerfile, Command: list(a.Command), ResumeCommand: list(a.ResumeCommand), Workdir: a.Workdir,
			Env: list(a.Env), TranscriptPath: a.TranscriptPath, Egress: list(a.Egress), CapAdd: list(a.CapAdd), User: a.User,
			Credentials: credentialsJSON(a.Credentials)})
	}
	return out
}

// rowsJSON gives list's rows their lists.
func rowsJSON(rows []lifecycle.Row) []lifecycle.Row {
	out := make([]lifecycle.Row, 0, len(rows))
	for _, r := range rows {
		r.Snapshots, r.Egress = list(r.Snapshots), list(r.Egress)
		out = append(out, r)
	}
	return out
}

// installJSON is what `plugins install --json` prints: the names `plugins
// --json` uses for the same facts.
type installJSON struct {
	Name        string   `json:"name"`
	Path        string   `json:"path"`
	Version     string   `json:"version,omitempty"`
	Protocol    int      `json:"protocol_version,omitempty"`
	APIVersions []string `json:"api_versions"`
	SHA256      string   `json:"sha256"`
	Notes       []string `json:"notes"`
}

func installedJSON(in pluginhost.Installed) installJSON {
	return installJSON{Name: in.Name, Path: in.Path, Version: in.Version, Protocol: in.Protocol,
		APIVersions: list(in.APIVersions), SHA256: in.SHA256, Notes: list(in.Notes)}
}

// list is s, or [] for nil: a JSON list is never null.
func list[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func credentialsJSON(cs []config.Credential) []credentialJSON {
	out := []credentialJSON{}
	for _, c := range cs {
		out = append(out, credentialJSON{Name: c.Name, Env: c.EnvName, Hosts: list(c.Hosts), Header: c.Header, Prefix: c.Prefix, Source: c.Source()})
	}
	return out
}
