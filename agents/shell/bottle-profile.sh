# shellcheck shell=sh
# Login shells of the shell agent keep their history in the transcript path
# named by agent.hcl, written after every command so that a commit or a
# teardown mid-session still carries it.
export HISTFILE=/home/agent/.bottle-transcript
case ";${PROMPT_COMMAND:-};" in
*";history -a;"*) ;;
*) PROMPT_COMMAND="history -a${PROMPT_COMMAND:+;$PROMPT_COMMAND}" ;;
esac
