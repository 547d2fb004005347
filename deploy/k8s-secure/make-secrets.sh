#!/usr/bin/env bash
# Makes the Secrets deploy/k8s-secure needs, in namespace pubsub:
#   pubsub-cluster-secret  the secret nodes present to each other
#   pubsub-admin-token     the first admin token (also printed to admin.token here)
#   pubsub-tls             a CA and one certificate for every pubsub Service name
# Needs openssl, kubectl and the pubsub CLI (PUBSUB=path/to/pubsub, default: pubsub).
# The CA key stays in ./pubsub-ca.key: keep it safe, or delete it and make new
# certificates by running this again (pods reload changed certificates themselves).
set -euo pipefail
NS=${NAMESPACE:-pubsub}
PUBSUB=${PUBSUB:-pubsub}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

openssl rand -hex 32 > "$work/secret"
"$PUBSUB" token generate > admin.token
chmod 600 admin.token

if [ ! -f pubsub-ca.key ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=pubsub-ca \
        -keyout pubsub-ca.key -out pubsub-ca.pem 2>/dev/null
fi
san="DNS:*.pubsub-cm.$NS.svc,DNS:*.pubsub-broker.$NS.svc,DNS:pubsub.$NS.svc"
san="$san,DNS:pubsub-consumers.$NS.svc,DNS:*.pubsub-consumer-manager.$NS.svc,DNS:localhost,IP:127.0.0.1"
openssl req -newkey rsa:2048 -nodes -subj /CN=pubsub -keyout "$work/tls.key" \
    -out "$work/tls.csr" 2>/dev/null
printf 'subjectAltName=%s\n' "$san" > "$work/san.ext"
openssl x509 -req -in "$work/tls.csr" -CA pubsub-ca.pem -CAkey pubsub-ca.key \
    -CAcreateserial -days 825 -extfile "$work/san.ext" -out "$work/tls.crt" 2>/dev/null

apply() { kubectl -n "$NS" create secret generic "$@" --dry-run=client -o yaml | kubectl apply -f -; }
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
apply pubsub-cluster-secret --from-file=secret="$work/secret"
apply pubsub-admin-token --from-file=token=admin.token
apply pubsub-tls --from-file=ca.pem=pubsub-ca.pem --from-file=tls.crt="$work/tls.crt" \
    --from-file=tls.key="$work/tls.key"
echo "secrets made; the admin token is in ./admin.token, the CA clients trust in ./pubsub-ca.pem"
