#!/usr/bin/env bash
# The service doing its main job against a real local mail stack: installs what is
# missing (Debian, root), starts Dovecot + Postfix on loopback, delivers sample partner
# mail through Postfix, runs `triage run --once`, and shows what each person received.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bash tools/mailstack/install.sh
command -v cargo >/dev/null || { echo "demo: cargo is needed (rustup)" >&2; exit 1; }
cargo build --release --locked -q

state=$(mktemp -d /tmp/triage-demo.XXXXXX)
chmod 0755 "$state"   # the postfix and dovecot users must traverse it
users="partnersupport@example.com partnerorderops@example.com billingops@example.com
  rep.one@example.com isr.one@example.com cam.east@example.com rep.two@example.com cam.central@example.com
  rep.dach@example.com isr.dach@example.com cam.dach@example.com
  alice@reseller.example max@partner.example yamada@hanbai.example"
cleanup() { MAILSTACK_QUIET=1 bash "$root/tools/mailstack/stop.sh" "$state/stack" >/dev/null 2>&1; rm -rf "$state"; }
trap cleanup EXIT
MAILSTACK_IMAP_PORT=0 MAILSTACK_IMAPS_PORT=0 MAILSTACK_LMTP_PORT=0 MAILSTACK_SMTP_PORT=0 \
MAILSTACK_SUBMISSION_PORT=0 MAILSTACK_SMTPS_PORT=0 MAILSTACK_USERS="$users" \
  bash tools/mailstack/start.sh "$state/stack" > "$state/stack.env"
. "$state/stack/mailstack.env"
echo "mail stack up in ${MAILSTACK_READY_SECONDS}s: IMAP 127.0.0.1:$MAILSTACK_IMAP_PORT, SMTP 127.0.0.1:$MAILSTACK_SMTP_PORT"

# The example config, pointed at the local stack (plain on loopback, as said explicitly).
sed -e "/^imap:/,\$d" deploy/triage.yaml | sed -e "s#^rules: ../rules#rules: $root/rules#" \
  -e "s#^templates: ../response-templates#templates: $root/response-templates#" \
  -e "s#^  path: directory #  path: $root/deploy/directory #" > "$state/triage.yaml"
cat >> "$state/triage.yaml" <<YAML
imap: {host: 127.0.0.1, port: $MAILSTACK_IMAP_PORT, tls: plain, username: partnersupport@example.com, password: {env: DEMO_PASSWORD}}
smtp: {host: 127.0.0.1, port: $MAILSTACK_SMTP_PORT, tls: plain}
service: {state: $state/triage.sqlite, documents: $state/documents}
YAML
export DEMO_PASSWORD=$MAILSTACK_PASSWORD

cases="en-purchase-order-direct en-quote-request-ops-copied poe-complete-en poe-missing-customer-en
  de-angebot-direct-customer-name quote-ambiguous-customer bait-out-of-office trust-dmarc-fail"
for c in $cases; do
  python3 - "$MAILSTACK_SMTP_PORT" "tests/cases/$c.eml" <<'PY'
import smtplib, sys, email, email.policy, email.utils
raw = open(sys.argv[2], "rb").read()
m = email.message_from_bytes(raw, policy=email.policy.default)
sender = email.utils.parseaddr(m["From"])[1]
with smtplib.SMTP("127.0.0.1", int(sys.argv[1])) as s:
    s.sendmail(sender, ["partnersupport@example.com"], raw)
PY
done
dove="doveadm -c $MAILSTACK_DOVECOT_CONF"
for _ in $(seq 50); do
  n=$($dove search -u partnersupport@example.com mailbox INBOX ALL | wc -l)
  [[ $n -ge 8 ]] && break; sleep 0.1
done
echo "delivered $n partner messages to partnersupport@example.com"
echo
target/release/triage run --once --config "$state/triage.yaml" 2>&1 | sed 's/^/  /'
sleep 1
echo
echo "== what each message became: triage audit =="
target/release/triage audit --config "$state/triage.yaml"
echo
echo "== triage audit summary =="
target/release/triage audit summary --config "$state/triage.yaml" | sed 's/^/  /'
echo
echo "== which rules decided what: triage audit coverage =="
target/release/triage audit coverage --config "$state/triage.yaml" | sed 's/^/  /'
echo
echo "== what people received =="
python3 - "$MAILSTACK_IMAP_PORT" "$MAILSTACK_PASSWORD" <<'PY'
import imaplib, sys, email, email.policy
for u in ["alice@reseller.example", "max@partner.example", "rep.one@example.com", "isr.one@example.com",
          "cam.east@example.com", "partnerorderops@example.com", "rep.dach@example.com"]:
    m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1])); m.login(u, sys.argv[2]); m.select("INBOX", readonly=True)
    for num in m.search(None, "ALL")[1][0].split():
        data = next(d[1] for d in m.fetch(num, "(BODY.PEEK[])")[1] if isinstance(d, tuple))
        msg = email.message_from_bytes(data, policy=email.policy.default)
        att = [p.get_filename() for p in msg.iter_attachments()]
        print(f"  {u:<28} {msg['Subject'][:40]:<40} cc: {msg['Cc'] or '-'}" + (f"  attachments: {', '.join(att)}" if att else ""))
    m.logout()
PY
echo
echo "== partnersupport@ folders =="
$dove mailbox status -u partnersupport@example.com 'messages' '*' | sed 's/^/  /'
echo "documents kept for the CRM:"; (cd "$state/documents" 2>/dev/null && find . -type f | sed 's/^/  /') || true
