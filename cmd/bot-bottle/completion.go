package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/posener/complete"

	"github.com/bot-bottle/bot-bottle/internal/config"
	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/internal/state"
)

// CompletionCmd prints the completion script for one shell. The script
// calls bot-bottle back (kongplete, COMP_LINE) for every completion, so
// agents, identities and request ids come from the home at the time.
type CompletionCmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"The shell to print the script for: ${enum}."`
}

func (c *CompletionCmd) Help() string {
	return `Prints a script; install it as its first lines say:

  bash:  bot-bottle completion bash > ~/.local/share/bash-completion/completions/bot-bottle
  zsh:   bot-bottle completion zsh > "${fpath[1]}/_bot-bottle"   (or: source <(bot-bottle completion zsh) in ~/.zshrc)
  fish:  bot-bottle completion fish > ~/.config/fish/completions/bot-bottle.fish

Then start a new shell. Completes commands, flags, agents (start), bottle
identities (attach, stop, rm, ...) and pending request ids (approve, deny).`
}

func (c *CompletionCmd) Run(kctx *kong.Context) error {
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find bot-bottle's own path: %w", err)
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return fmt.Errorf("find bot-bottle's own path: %w", err)
	}
	_, err = fmt.Fprint(kctx.Stdout, completionScript(c.Shell, kctx.Model.Name, bin))
	return err
}

// completionScript is the script for shell; its first lines say how to
// install it.
func completionScript(shell, name, bin string) string {
	q := shellQuote(bin)
	switch shell {
	case "zsh":
		return fmt.Sprintf(`#compdef %[1]s
# zsh completion for %[1]s. Install: %[1]s completion zsh > "${fpath[1]}/_%[1]s"
# (or add to ~/.zshrc: source <(%[1]s completion zsh)), then start a new shell.
autoload -U +X bashcompinit && bashcompinit
complete -o default -C %[2]s %[1]s
`, name, q)
	case "fish":
		return fmt.Sprintf(`# fish completion for %[1]s. Install: %[1]s completion fish > ~/.config/fish/completions/%[1]s.fish
function __complete_%[3]s
    set -lx COMP_LINE (commandline -cp)
    test -z (commandline -ct)
    and set COMP_LINE "$COMP_LINE "
    %[2]s
end
complete -f -c %[1]s -a "(__complete_%[3]s)"
`, name, q, strings.ReplaceAll(name, "-", "_"))
	default:
		return fmt.Sprintf(`# bash completion for %[1]s. Install: %[1]s completion bash > ~/.local/share/bash-completion/completions/%[1]s
# (or add to ~/.bashrc: source <(%[1]s completion bash)), then start a new shell.
complete -o default -C %[2]s %[1]s
`, name, q)
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// completionHome is the home a completion reads: completion runs before
// flags are parsed, so only $BOT_BOTTLE_HOME or the default counts.
func completionHome() string {
	if home := os.Getenv("BOT_BOTTLE_HOME"); home != "" {
		return home
	}
	home, _ := state.DefaultHome()
	return home
}

// identityPredictor completes bottle identities from the state dir.
func identityPredictor() complete.Predictor {
	return complete.PredictFunc(func(complete.Args) []string {
		store, err := state.Open(completionHome())
		if err != nil {
			return nil
		}
		ids, _ := store.Identities()
		return ids
	})
}

// agentPredictor completes the agents start can run.
func agentPredictor() complete.Predictor {
	return complete.PredictFunc(func(complete.Args) []string {
		agents, _ := config.ListAgents(completionHome())
		var names []string
		for _, a := range agents {
			names = append(names, a.Name)
		}
		return names
	})
}

// requestPredictor completes the ids of pending requests (those already
// read from the bottles' inboxes: completing never ingests).
func requestPredictor() complete.Predictor {
	return complete.PredictFunc(func(complete.Args) []string {
		reqs, _ := queue.Open(completionHome()).List()
		var ids []string
		for _, r := range reqs {
			if r.Status == queue.StatusPending {
				ids = append(ids, r.ID)
			}
		}
		return ids
	})
}
