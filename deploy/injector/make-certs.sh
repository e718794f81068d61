#!/usr/bin/env bash
# The manual certificate path for the admission webhook (without cert-manager).
#
#   deploy/injector/make-certs.sh [--out DIR] [--days N] [--apply]
#
# Makes a CA (kept in DIR and reused on later runs, so the webhook's caBundle stays the same) and a
# serving certificate for the webhook's Service, valid N days (default 365). Then either prints the
# two kubectl commands that install them, or runs them with --apply: the Secret the Deployment
# mounts (created or replaced: the injector reloads it without a restart) and the caBundle of the
# MutatingWebhookConfiguration. Run it again before the certificate expires to rotate it.
# NAMESPACE and SERVICE name the webhook's Service (default sidecars-system, sidecars-injector).
set -euo pipefail

out="sidecars-injector-certs"
days=365
apply=0
while (($#)); do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --days) days="$2"; shift 2 ;;
    --apply) apply=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "make-certs.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
namespace="${NAMESPACE:-sidecars-system}"
service="${SERVICE:-sidecars-injector}"
dns="$service.$namespace.svc"

mkdir -p "$out"
umask 077
if [[ ! -s "$out/ca.key" || ! -s "$out/ca.crt" ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=$service-ca" -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
fi
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -subj "/CN=$dns" -keyout "$out/tls.key.new" -out "$out/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:%s.cluster.local\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n' \
  "$dns" "$dns" >"$out/tls.ext"
openssl x509 -req -in "$out/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -days "$days" \
  -set_serial "0x$(openssl rand -hex 16)" -extfile "$out/tls.ext" -out "$out/tls.crt.new" 2>/dev/null
mv "$out/tls.key.new" "$out/tls.key"
mv "$out/tls.crt.new" "$out/tls.crt"
rm -f "$out/tls.csr" "$out/tls.ext"
ca_bundle="$(base64 -w0 <"$out/ca.crt")"

secret=(kubectl -n "$namespace" create secret tls "$service-tls" --cert "$out/tls.crt" --key "$out/tls.key"
  --dry-run=client -o yaml)
patch=(kubectl patch mutatingwebhookconfiguration "$service" --type json
  -p "[{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$ca_bundle\"}]")
if ((apply)); then
  "${secret[@]}" | kubectl apply -f -
  "${patch[@]}"
else
  echo "# certificate for $dns in $out/ (CA: $out/ca.crt); install it with:"
  printf '%q ' "${secret[@]}"; echo '| kubectl apply -f -'
  printf '%q ' "${patch[@]}"; echo
fi
