package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kong"

	"github.com/bot-bottle/bot-bottle/internal/config"
	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/pluginhost"
	"github.com/bot-bottle/bot-bottle/internal/state"
	"github.com/bot-bottle/bot-bottle/internal/term"
	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/render"
)

// exitWith turns an agent's exit code into the process's.
func exitWith(code int, err error) error {
	if err != nil {
		return err
	}
	if code != 0 {
		return &lifecycle.ExitError{Code: code}
	}
	return nil
}

type StartCmd struct {
	Agent   string   `arg:"" help:"Agent to run (see: bot-bottle agents)." predictor:"agent"`
	Cwd     string   `help:"Project directory to put at the agent's workdir (bind-mounted)." type:"path" placeholder:"DIR"`
	CopyCwd bool     `name:"copy-cwd" help:"Copy --cwd into the bottle instead of mounting it; the host tree is never written."`
	Backend string   `help:"Backend plugin (default: BOT_BOTTLE_BACKEND, then default_backend in plugins.hcl, then docker)." placeholder:"NAME"`
	Detach  bool     `short:"d" help:"Start the bottle and return; attach later with bot-bottle attach."`
	Review  bool     `help:"Give the bottle its own clone of --cwd's git repository, on branch bot-bottle/<identity>; review it with diff, apply, merge, rm. The operator's tree is never written."`
	From    string   `help:"With --review: start the branch from REF instead of HEAD." placeholder:"REF"`
	Author  string   `help:"With --review: who the agent's commits are by (default: bot-bottle <identity>)." placeholder:"\"NAME <EMAIL>\""`
	Command []string `arg:"" optional:"" passthrough:"" help:"Command to run instead of the agent's (after --)."`
}

// AfterApply refuses a mistyped flag after the agent name.
func (c *StartCmd) AfterApply(kctx *kong.Context) error {
	return commandAfterDashes(kctx, c.Agent, c.Command)
}

func (c *StartCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	code, err := env.Start(a.ctx, lifecycle.StartOptions{Agent: c.Agent, Cwd: c.Cwd, CopyCwd: c.CopyCwd,
		Backend: c.Backend, Detach: c.Detach, Command: stripDashes(c.Command),
		Review: c.Review, From: c.From, Author: c.Author})
	return exitWith(code, err)
}

type ResumeCmd struct {
	Identity string   `arg:"" help:"Identity of the bottle, e.g. claude-7k2qz." predictor:"identity"`
	Detach   bool     `short:"d" help:"Resume and return; attach later with bot-bottle attach."`
	Command  []string `arg:"" optional:"" passthrough:"" help:"Command to run instead of the agent's resume command (after --)."`
}

// AfterApply refuses a mistyped flag after the identity.
func (c *ResumeCmd) AfterApply(kctx *kong.Context) error {
	return commandAfterDashes(kctx, c.Identity, c.Command)
}

func (c *ResumeCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	code, err := env.Resume(a.ctx, c.Identity, lifecycle.ResumeOptions{Detach: c.Detach, Command: stripDashes(c.Command)})
	return exitWith(code, err)
}

type AttachCmd struct {
	Identity string `arg:"" help:"Identity of a running bottle." predictor:"identity"`
}

func (c *AttachCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	return exitWith(env.Attach(a.ctx, c.Identity))
}

type CommitCmd struct {
	Identity string `arg:"" optional:"" help:"Identity of a running bottle (a picker opens on a terminal when omitted)." predictor:"identity"`
}

func (c *CommitCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	id := c.Identity
	if id == "" {
		if id, err = pickRunning(a, env); err != nil {
			return err
		}
	}
	ref, err := env.Commit(a.ctx, id)
	if err != nil {
		return err
	}
	fmt.Printf("committed %s as %s; the bottle is preserved (after it stops: %s)\n", id, ref, lifecycle.ResumeCommand(id))
	return nil
}

// pickRunning asks which running bottle to use when stdin is a terminal,
// and otherwise fails with the list to choose from.
func pickRunning(a *App, env *lifecycle.Env) (string, error) {
	rows, _, err := env.List(a.ctx)
	if err != nil {
		return "", err
	}
	var running []lifecycle.Row
	for _, r := range rows {
		if r.Status == sdk.StatusRunning && r.InState {
			running = append(running, r)
		}
	}
	if len(running) == 0 {
		return "", errors.New("no running bottles")
	}
	var ids []string
	for _, r := range running {
		ids = append(ids, r.Identity)
	}
	if !term.IsTerminal(os.Stdin) {
		return "", fmt.Errorf("which bottle? give an identity; running: %s", strings.Join(ids, ", "))
	}
	for i, r := range running {
		fmt.Fprintf(os.Stderr, "  %d) %s  %s  %s  %s\n", i+1, r.Identity, r.Agent, r.Backend, r.Cwd)
	}
	fmt.Fprintf(os.Stderr, "commit which bottle? [1-%d]: ", len(running))
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil {
		return "", errors.New("no bottle chosen")
	}
	n, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || n < 1 || n > len(running) {
		return "", fmt.Errorf("no such choice %q", strings.TrimSpace(line))
	}
	return running[n-1].Identity, nil
}

type StopCmd struct {
	Identities []string `arg:"" optional:"" help:"Identities of the bottles to stop." predictor:"identity"`
	All        bool     `help:"Stop every running bottle."`
	Preserve   bool     `help:"Keep the bottles' state so that bot-bottle resume can bring them back."`
}

func (c *StopCmd) Help() string {
	return `Unlike docker's stop, stopping a bottle that is not kept removes it (its
backend resources, snapshots and state; the audit log stays). A bottle is kept
when it was committed, had a change approved, or was stopped with --preserve,
and then stays kept until bot-bottle rm. stop says which it did.`
}

func (c *StopCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	ids, err := chooseIdentities(c.Identities, c.All, func() ([]string, error) { return runningIdentities(a, env) })
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		// Stop's outcome follows from the machine: a kept bottle stays kept,
		// any other is removed unless --preserve keeps it.
		kept, err := env.Store.IsPreserved(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := env.Stop(a.ctx, id, c.Preserve); err != nil {
			errs = append(errs, err)
			continue
		}
		switch {
		case kept:
			fmt.Printf("stopped %s; it stays kept (committed, approved change or --preserve) until bot-bottle rm %s\n", id, id)
		case c.Preserve:
			fmt.Printf("stopped %s; kept until bot-bottle rm %s\n", id, id)
		default:
			fmt.Printf("stopped and removed %s: its backend resources, snapshots and state (its audit log stays: bot-bottle audit %s); to keep a bottle when it stops, use stop --preserve or commit it first\n", id, id)
		}
	}
	return errors.Join(errs...)
}

// chooseIdentities is the identities a command acts on: those given or,
// with all, every one that all lists; never both, never none. Every given
// one is checked before anything is done.
func chooseIdentities(given []string, all bool, list func() ([]string, error)) ([]string, error) {
	switch {
	case all && len(given) > 0:
		return nil, errors.New("give identities or --all, not both")
	case all:
		ids, err := list()
		if err == nil && len(ids) == 0 {
			fmt.Fprintln(os.Stderr, "bot-bottle: no bottles to act on")
		}
		return ids, err
	case len(given) == 0:
		return nil, errors.New("give one or more identities, or --all (see: bot-bottle list)")
	}
	for _, id := range given {
		if err := state.ValidateIdentity(id); err != nil {
			return nil, err
		}
	}
	return given, nil
}

// runningIdentities is the bottles in this home that a backend runs.
func runningIdentities(a *App, env *lifecycle.Env) ([]string, error) {
	rows, _, err := env.List(a.ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, r := range rows {
		if r.Status == sdk.StatusRunning && r.InState {
			ids = append(ids, r.Identity)
		}
	}
	return ids, nil
}

type ListCmd struct {
	JSON bool `name:"json" help:"Print JSON."`
}

func (c *ListCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	rows, warnings, err := env.List(a.ctx)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		fmt.Fprintf(os.Stderr, "bot-bottle: warning: %s\n", oneLine(w.Error()))
	}
	env.AddReviews(a.ctx, rows)
	if c.JSON {
		return printJSON(rowsJSON(rows))
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IDENTITY\tAGENT\tBACKEND\tSTATUS\tUPTIME\tPRESERVED\tCOMMITTED\tSNAPSHOTS\tEGRESS\tCWD\tREVIEW")
	orphaned := 0
	for _, r := range rows {
		status := r.Status
		if r.Orphaned {
			status, orphaned = "orphaned ("+r.Status+")", orphaned+1
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", render.Text(r.Identity), render.Text(r.Agent),
			render.Text(r.Backend), render.Text(status), uptime(r), yesNo(r.Preserved), dash(render.Text(r.CommittedImage)),
			len(r.Snapshots), dash(render.Text(strings.Join(r.Egress, ","))), dash(render.Text(r.Cwd)), reviewColumn(r))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if orphaned > 0 {
		fmt.Fprintf(os.Stderr, "bot-bottle: %d orphaned (no bot-bottle process holds them and they were not detached): bot-bottle prune removes what they left and keeps their state for resume (prune --dry-run shows what)\n", orphaned)
	}
	return nil
}

func uptime(r lifecycle.Row) string {
	if r.Status != sdk.StatusRunning || r.StartedAt == "" {
		return "-"
	}
	t, err := time.Parse(time.RFC3339, r.StartedAt)
	if err != nil {
		return "-"
	}
	return time.Since(t).Round(time.Second).String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

type RmCmd struct {
	Identities []string `arg:"" optional:"" help:"Identities of the bottles to remove." predictor:"identity"`
	All        bool     `help:"Remove every bottle of this home, kept or not."`
	Force      bool     `help:"Also delete a review bottle's branch with unmerged commits (kept otherwise, and said so), and remove it even when its work cannot be saved."`
}

func (c *RmCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	// All or nothing on bad input: refuse before removing anything.
	ids, err := chooseIdentities(c.Identities, c.All, env.Store.Identities)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		res, err := env.RemoveWith(a.ctx, id, lifecycle.RemoveOptions{Force: c.Force})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Println(id)
		if res.KeptBranch != nil {
			fmt.Fprintf(os.Stderr, "bot-bottle: %s\n", render.Text(res.KeptBranch.String()))
		}
	}
	return errors.Join(errs...)
}

type RevertCmd struct {
	Identity string `arg:"" help:"Identity of the stopped bottle." predictor:"identity"`
}

func (c *RevertCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	res, err := env.Revert(a.ctx, c.Identity)
	if err != nil {
		return err
	}
	fmt.Printf("reverted %s: its next resume boots %s (the dropped Dockerfile is in its audit log)\n", res.Identity, res.Source)
	fmt.Printf("resume it with: %s\n", lifecycle.ResumeCommand(res.Identity))
	return nil
}

type PruneCmd struct {
	DryRun bool `name:"dry-run" help:"Say what would be removed; remove nothing."`
}

func (c *PruneCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	prune, verb := env.Prune, "removed"
	if c.DryRun {
		prune, verb = env.PruneDryRun, "would remove"
	}
	removed, errs, err := prune(a.ctx)
	if err != nil {
		return err
	}
	for _, r := range removed {
		fmt.Println(verb, r)
	}
	if len(removed) == 0 {
		fmt.Fprintln(os.Stderr, "bot-bottle: nothing to prune")
	}
	return errors.Join(errs...)
}

type AgentsCmd struct {
	JSON bool `name:"json" help:"Print JSON."`
}

func (c *AgentsCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	agents, err := config.ListAgents(env.Home)
	// As a start would run them: with the operator's credentials.
	for i := range agents {
		if aerr := env.Plugins.ApplyCredentials(&agents[i]); aerr != nil {
			err = errors.Join(err, aerr)
		}
	}
	if c.JSON {
		if jerr := printJSON(agentsJSON(agents)); jerr != nil {
			return jerr
		}
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDESCRIPTION\tSOURCE")
	for _, ag := range agents {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", ag.Name, ag.Description, ag.Source)
	}
	if ferr := tw.Flush(); ferr != nil {
		return ferr
	}
	return err
}

// PluginsCmd groups the plugin commands; with no subcommand it lists.
type PluginsCmd struct {
	List    PluginsListCmd    `cmd:"" default:"withargs" help:"List backend plugins: version, protocol, capabilities, checksum (pinned, locked, changed), source and path (the default)."`
	Install PluginsInstallCmd `cmd:"" help:"Install a plugin binary into $BOT_BOTTLE_HOME/plugins and lock its sha256 in plugins.lock.hcl."`
	Verify  PluginsVerifyCmd  `cmd:"" help:"Check every plugin in $BOT_BOTTLE_HOME/plugins against plugins.lock.hcl."`
}

func (c *PluginsCmd) Help() string {
	return `With no command, lists the plugins (as "plugins list").

Plugins are found by: BOT_BOTTLE_DEV_PLUGINS (name=/abs/path pairs, for
development; never checked) → path in plugins.hcl (checked against its sha256
pin, if any) → $BOT_BOTTLE_HOME/plugins (where "plugins install" puts them;
checked against plugins.lock.hcl before every start) → next to bot-bottle →
$PATH.`
}

type PluginsListCmd struct {
	JSON bool `name:"json" help:"Print JSON."`
}

// pluginRow is one plugin as `plugins` reports it.
type pluginRow struct {
	Name         string            `json:"name"`
	Path         string            `json:"path"`
	Source       string            `json:"source"`
	Version      string            `json:"version,omitempty"`
	Protocol     int               `json:"protocol_version,omitempty"`
	APIVersions  []string          `json:"api_versions"`
	Capabilities []string          `json:"capabilities"`
	Details      map[string]string `json:"details,omitempty"`
	SHA256       string            `json:"sha256"`
	Pinned       string            `json:"sha256_pinned,omitempty"`
	Locked       string            `json:"sha256_locked,omitempty"`
	Checksum     string            `json:"checksum"`
	Error        string            `json:"error,omitempty"`
}

func (c *PluginsListCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	found, errs := env.Host.Discover()
	rows := []pluginRow{}
	for _, f := range found {
		if hf, err := pluginhost.WithChecksum(f); err == nil {
			f = hf
		}
		row := pluginRow{Name: f.Name, Path: f.Path, Source: f.Source, SHA256: f.Actual, Pinned: f.Pinned, Locked: f.Locked,
			Checksum: f.Checksum, Capabilities: []string{}, APIVersions: []string{}}
		p, err := env.Host.StartFound(a.ctx, f)
		if err != nil {
			row.Error = oneLine(err.Error())
		} else {
			row.Version, row.Protocol, row.APIVersions, row.Details = p.Info.Version, p.Protocol, list(p.Info.APIVersions), p.Info.Details
			for _, cp := range p.Info.Capabilities {
				row.Capabilities = append(row.Capabilities, string(cp))
			}
			p.Close()
		}
		rows = append(rows, row)
	}
	for _, e := range errs {
		fmt.Fprintf(os.Stderr, "bot-bottle: warning: %s\n", oneLine(e.Error()))
	}
	if c.JSON {
		return printJSON(rows)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tPROTOCOL\tCAPABILITIES\tCHECKSUM\tSOURCE\tPATH")
	for _, r := range rows {
		ver := r.Version
		if r.Error != "" {
			ver = "error: " + r.Error
		}
		// A plugin's answers are its own words: escaped like a bottle's.
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", render.Text(r.Name), render.Text(ver), r.Protocol,
			dash(render.Text(strings.Join(r.Capabilities, ","))), r.Checksum, render.Text(r.Source), render.Text(r.Path))
	}
	return tw.Flush()
}

type PluginsInstallCmd struct {
	Path string `arg:"" type:"path" help:"The plugin binary to install (e.g. a local build). It is copied, started once and asked for its Info; it is installed as bot-bottle-plugin-<its name>, replacing an earlier install of that name."`
	JSON bool   `name:"json" help:"Print what was installed as JSON."`
}

func (c *PluginsInstallCmd) Help() string {
	return `The binary is copied into $BOT_BOTTLE_HOME/plugins, started the way bot-bottle
starts every plugin and asked for its Info; its name, version, protocol and API
versions and sha256 go into $BOT_BOTTLE_HOME/plugins.lock.hcl. From then on
bot-bottle refuses to run that installed plugin if its binary changes; install
the new binary to re-lock it. A file that is not a working plugin leaves nothing
behind. The lock file may be committed to share or review the plugins in use.

Set BOT_BOTTLE_DEV_PLUGINS=name=/abs/path[,name=/abs/path] to run a development
build instead without installing it; it is not checked against the lock file.`
}

func (c *PluginsInstallCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	in, err := env.Host.Install(a.ctx, c.Path)
	if err != nil {
		return err
	}
	if c.JSON {
		return printJSON(installedJSON(in))
	}
	fmt.Printf("installed %s %s (protocol %d, sha256 %s…) to %s\n", in.Name, in.Version, in.Protocol, in.SHA256[:12], in.Path)
	for _, n := range in.Notes {
		fmt.Fprintf(os.Stderr, "bot-bottle: note: %s\n", n)
	}
	return nil
}

type PluginsVerifyCmd struct {
	JSON bool `name:"json" help:"Print JSON."`
}

func (c *PluginsVerifyCmd) Help() string {
	return `One line per plugin binary in $BOT_BOTTLE_HOME/plugins and per entry of
plugins.lock.hcl: ok, CHANGED (sha256 differs from the lock), missing binary, or
not locked, with how to fix it. Exits non-zero unless every plugin is ok.
Plugins found elsewhere (plugins.hcl path, next to bot-bottle, $PATH,
BOT_BOTTLE_DEV_PLUGINS) are not covered by the lock file.`
}

var verifyLabel = map[string]string{
	pluginhost.VerifyOK:        "ok",
	pluginhost.VerifyChanged:   "CHANGED",
	pluginhost.VerifyMissing:   "missing binary",
	pluginhost.VerifyNotLocked: "not locked",
}

func (c *PluginsVerifyCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	checks, err := env.Host.Verify()
	if err != nil {
		return err
	}
	bad := 0
	for _, ch := range checks {
		if ch.Status != pluginhost.VerifyOK {
			bad++
		}
	}
	if c.JSON {
		if err := printJSON(list(checks)); err != nil {
			return err
		}
	} else {
		if len(checks) == 0 {
			fmt.Fprintf(os.Stderr, "bot-bottle: no installed plugins (%s is empty)\n", filepath.Join(env.Home, "plugins"))
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		for _, ch := range checks {
			detail := ch.Path
			if ch.Status == pluginhost.VerifyOK {
				detail = fmt.Sprintf("%s (sha256 %s…) %s", ch.Version, ch.SHA256[:12], ch.Path)
			} else {
				detail += ": " + ch.Problem
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", verifyLabel[ch.Status], ch.Name, detail)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d installed plugins failed verification", bad, len(checks))
	}
	return nil
}

type VersionCmd struct{}

func (c *VersionCmd) Run() error {
	fmt.Println(versionLine())
	return nil
}

func versionLine() string {
	return fmt.Sprintf("bot-bottle %s (plugin protocol %d, API %s, %s/%s)", version, sdk.ProtocolVersion, sdk.APIVersion, runtime.GOOS, runtime.GOARCH)
}

// versionFlag is --version: it prints what the version command prints and
// exits before any command runs, as docker --version does.
type versionFlag bool

func (versionFlag) BeforeReset(app *kong.Kong) error {
	fmt.Fprintln(app.Stdout, versionLine())
	app.Exit(0)
	return nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// stripDashes drops the `--` that separates bot-bottle's flags from the
// agent's command.
func stripDashes(args []string) []string {
	if len(args) > 0 && args[0] == "--" {
		return args[1:]
	}
	return args
}

func printJSONLine(v any) error { return json.NewEncoder(os.Stdout).Encode(v) }

// RevokeCmd is `bot-bottle revoke ID CREDENTIAL`.
type RevokeCmd struct {
	Identity   string `arg:"" help:"Identity of a running bottle." predictor:"identity"`
	Credential string `arg:"" help:"Name of the credential, as its agent.hcl's credential block names it (e.g. anthropic)."`
}

func (c *RevokeCmd) Help() string {
	return `The bottle keeps running; the agent still holds only its placeholder, and
requests that carry it now go out with the placeholder as it is. The
revocation holds until the bottle stops: its next start or resume reads the
credential from the host again (remove it from the host, or from the agent's
definition, to keep it away). The bottle's audit records it.`
}

func (c *RevokeCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	if err := env.RevokeCredential(a.ctx, c.Identity, c.Credential); err != nil {
		return err
	}
	fmt.Printf("revoked credential %s of %s; its next request goes out without it\n", c.Credential, c.Identity)
	return nil
}
