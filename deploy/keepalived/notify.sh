#!/bin/sh
# keepalived notify script: tells the local pyloxi daemon this node's VRRP state, as loxilb's
# cicd notify.sh does (POST /netlox/v1/config/cistate).
#
#   notify "/etc/keepalived/pyloxi-notify.sh [HA-INSTANCE [API-URL [INSTANCE-VIP]]]"
#
# keepalived appends: TYPE (INSTANCE|GROUP) NAME STATE (MASTER|BACKUP|FAULT|STOP) PRIORITY.
# HA-INSTANCE defaults to llb-inst0 (the instance of rules named without a ":instance" suffix);
# API-URL to http://127.0.0.1:11111; INSTANCE-VIP (cistate's vip: the fullnat source address of
# the instance's rules, see docs/cluster.md) to 0.0.0.0, none. A failed call is retried a few times (the daemon may be
# restarting); the exit status is keepalived's log line, nothing more.
# With token authentication (pyloxi daemon --token-file/--manualtoken), the first token of
# $PYLOXI_TOKEN_FILE (default /etc/loxilb/manual_token) is sent; it goes to curl on its
# standard input, never on its command line (which every local user can read).
set -u
if [ "$#" -lt 4 ]; then
  echo "usage: $0 [HA-INSTANCE [API-URL]] TYPE NAME STATE PRIORITY" >&2
  exit 2
fi
inst=llb-inst0
api=http://127.0.0.1:11111
[ "$#" -ge 5 ] && inst=$1
[ "$#" -ge 6 ] && api=$2
vip=0.0.0.0
[ "$#" -ge 7 ] && vip=$3
eval "state=\${$(($# - 1))}"
case "$state" in
  MASTER|BACKUP|FAULT|STOP) ;;
  *) echo "pyloxi-notify: unknown state $state" >&2; exit 2 ;;
esac
body="{\"instance\":\"$inst\",\"state\":\"$state\",\"vip\":\"$vip\"}"
token_file=${PYLOXI_TOKEN_FILE:-/etc/loxilb/manual_token}
token=""
if [ -r "$token_file" ]; then
  token=$(sed -n '/^[[:space:]]*#/d; /[^[:space:]]/{s/[[:space:]]//g;p;q;}' "$token_file")
fi
auth() {  # curl's --config on stdin: printf is a shell builtin, so no argv shows the token
  if [ -n "$token" ]; then printf 'header = "Authorization: Bearer %s"\n' "$token"; fi
}
for _ in 1 2 3 4 5; do
  if auth | curl --config - -sf -o /dev/null --max-time 2 -X POST \
      -H 'Content-Type: application/json' -d "$body" "$api/netlox/v1/config/cistate"; then
    exit 0
  fi
  sleep 0.2
done
echo "pyloxi-notify: $inst $state not delivered to $api" >&2
exit 1
