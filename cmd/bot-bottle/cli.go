package main

// CLI is the command tree.
type CLI struct {
	Globals

	Start    StartCmd    `cmd:"" help:"Start a new bottle for AGENT and attach to it."`
	Resume   ResumeCmd   `cmd:"" help:"Resume a kept bottle with the same identity and its recorded backend."`
	Attach   AttachCmd   `cmd:"" help:"Attach to a running bottle (Ctrl-P Ctrl-Q detaches)."`
	Commit   CommitCmd   `cmd:"" help:"Snapshot a running bottle so that resume boots from it."`
	Stop     StopCmd     `cmd:"" help:"Stop a bottle. A kept bottle (committed, approved change, --preserve) stays kept; --preserve keeps any other; the rest are removed."`
	List     ListCmd     `cmd:"" aliases:"ls" help:"List bottles of every backend."`
	Rm       RmCmd       `cmd:"" help:"Remove bottles whole: backend resources, snapshots and state (the audit log stays). The only command that removes a kept bottle."`
	Revert   RevertCmd   `cmd:"" help:"Drop the image changes made to a stopped bottle since it last came up (e.g. an approved capability that does not build), so that resume boots what worked."`
	Prune    PruneCmd    `cmd:"" help:"Remove backend resources that a crash left behind (state is kept)."`
	Revoke   RevokeCmd   `cmd:"" help:"Revoke a credential of a running bottle live: its egress proxy stops putting it on the wire from the next request."`
	Requests RequestsCmd `cmd:"" help:"List requests from inside bottles (capabilities, egress)."`
	Approve  ApproveCmd  `cmd:"" help:"Approve a request; a capability change stops the bottle preserved for a rebuild."`
	Deny     DenyCmd     `cmd:"" help:"Deny a request with a reason the agent is told."`
	Audit    AuditCmd    `cmd:"" help:"Show a bottle's audit log (kept after cleanup)."`
	Agents   AgentsCmd   `cmd:"" help:"List the agents you can start."`
	Plugins  PluginsCmd  `cmd:"" help:"List backend plugins (path, version, protocol, capabilities, checksum); install and verify them."`
	Version  VersionCmd  `cmd:"" help:"Print the version."`
	Home     HomeCmd     `cmd:"" help:"Print this home's path and the id its backends label resources with (dev.bot-bottle.home)."`

	Dashboard DashboardCmd `cmd:"" help:"Live full-screen view of bottles and pending requests: approve, deny, attach, commit, stop."`
	Supervise SuperviseCmd `cmd:"" help:"Decide requests by a policy file of rules; the rest wait for a human."`

	Completion CompletionCmd `cmd:"" help:"Print the shell completion script for bash, zsh or fish, with how to install it."`

	// Review of --review bottles (issue 23).
	Diff  DiffCmd  `cmd:"" help:"Show what a review bottle changed against its base, committed and not (fetched into your repository as branch bot-bottle/<identity>)."`
	Apply ApplyCmd `cmd:"" help:"Bring a review bottle's changes into your working tree, uncommitted; refused with the paths in the way on conflict."`
	Merge MergeCmd `cmd:"" help:"Merge a review bottle's branch into your current branch; refused with the conflicting paths, nothing changed."`
}

// Globals are flags every command takes.
type Globals struct {
	Version  versionFlag `name:"version" help:"Print the version and exit (as the version command)."`
	LogLevel string      `name:"log-level" env:"BOT_BOTTLE_LOG" default:"error" enum:"trace,debug,info,warn,error,off" help:"Log level for bot-bottle and plugin logs (${enum})."`
	Home     string      `name:"home" env:"BOT_BOTTLE_HOME" type:"path" help:"bot-bottle's home directory (default ~/.bot-bottle)."`
}
