# shellcheck shell=sh
# Login shells of the shell agent keep their history in the transcript path
# named by agent.hcl, written after every command so that a commit or a
# teardown mid-session still carries it.
export HISTFILE=/home/agent/.bottle-transcript
case ";${PROMPT_COMMAND:-};" in
*";history -a;"*) ;;
*) PROMPT_COMMAND="history -a${PROMPT_COMMAND:+;$PROMPT_COMMAND}" ;;
esac

# Say at login what the network is, where the agent (or its human) looks
# first: a bottle without an egress allowlist has no network at all, and
# "Temporary failure in name resolution" does not say why. The backend says
# which in BOT_BOTTLE_EGRESS (off, proxy, allowlist); without it, no proxy
# in a bottle means no network.
bb_egress_off=
case "${BOT_BOTTLE_EGRESS:-}" in
off) bb_egress_off=1 ;;
"") [ -n "${BOT_BOTTLE_IDENTITY:-}" ] && [ -z "${HTTPS_PROXY:-}${https_proxy:-}${HTTP_PROXY:-}${http_proxy:-}" ] && bb_egress_off=1 ;;
esac
if [ -n "$bb_egress_off" ]; then
	echo "bot-bottle: egress is off in this bottle (no network). Ask for a host with: bottle request egress HOST[:PORT] --reason WHY" >&2
fi
unset bb_egress_off
