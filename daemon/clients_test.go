package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The AWS CLI v2 and boto3 from Debian (`make deps` installs them) run every EBS
// operation and the EC2 subset against a daemon with real signatures. They are
// required: a missing client fails the test rather than skipping it.

// realClientEnv is the environment a real AWS client runs in: the test credential,
// no config files, no instance metadata service, no pager.
func realClientEnv(t *testing.T, secret string) []string {
	none := filepath.Join(t.TempDir(), "none")
	return []string{
		"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(),
		"AWS_ACCESS_KEY_ID=" + testAccessKeyID, "AWS_SECRET_ACCESS_KEY=" + secret,
		"AWS_DEFAULT_REGION=" + testRegion, "AWS_REGION=" + testRegion,
		"AWS_CONFIG_FILE=" + none, "AWS_SHARED_CREDENTIALS_FILE=" + none,
		"AWS_EC2_METADATA_DISABLED=true", "AWS_PAGER=",
	}
}

func requireTool(t *testing.T, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing: `make deps` installs Debian's %s", path, pkg)
	}
}

// awsCLIScript drives every operation through the AWS CLI; it exits non-zero on the
// first failure and prints what it checked.
const awsCLIScript = `set -euo pipefail
E=$1; WORK=$2
aws() { /usr/bin/aws --endpoint-url "$E" --output text "$@"; }
head -c 524288 /dev/urandom > $WORK/block
SUM=$(openssl dgst -sha256 -binary $WORK/block | base64)
AGG=$(openssl dgst -sha256 -binary $WORK/block | openssl dgst -sha256 -binary | base64)
SNAP=$(aws ebs start-snapshot --volume-size 1 --client-token cli-token --description cli --query SnapshotId)
AGAIN=$(aws ebs start-snapshot --volume-size 1 --client-token cli-token --description cli --query SnapshotId)
[ "$SNAP" = "$AGAIN" ] || { echo "token retry gave $AGAIN, not $SNAP"; exit 1; }
aws ebs put-snapshot-block --snapshot-id $SNAP --block-index 0 --data-length 524288 \
    --block-data $WORK/block --checksum "$SUM" --checksum-algorithm SHA256 >/dev/null
[ "$(aws ebs complete-snapshot --snapshot-id $SNAP --changed-blocks-count 1 --checksum "$AGG" \
    --checksum-algorithm SHA256 --checksum-aggregation-method LINEAR --query Status)" = completed ]
aws ec2 wait snapshot-completed --snapshot-ids $SNAP
TOKEN=$(aws ebs list-snapshot-blocks --snapshot-id $SNAP --query 'Blocks[0].BlockToken')
aws ebs get-snapshot-block --snapshot-id $SNAP --block-index 0 --block-token "$TOKEN" $WORK/back >/dev/null
cmp $WORK/block $WORK/back
CHILD=$(aws ebs start-snapshot --volume-size 1 --parent-snapshot-id $SNAP --query SnapshotId)
[ "$(aws ebs complete-snapshot --snapshot-id $CHILD --changed-blocks-count 0 --query Status)" = completed ]
[ "$(aws ebs list-changed-blocks --first-snapshot-id $SNAP --second-snapshot-id $CHILD --query 'length(ChangedBlocks)')" = 0 ]
aws ec2 create-tags --resources $SNAP --tags Key=env,Value=cli
[ "$(aws ec2 describe-snapshots --owner-ids self --filters Name=tag:env,Values=cli --query 'Snapshots[0].SnapshotId')" = $SNAP ]
aws ec2 delete-tags --resources $SNAP --tags Key=env
aws ec2 delete-snapshot --snapshot-id $CHILD
[ "$(aws ec2 describe-snapshots --owner-ids self --query 'length(Snapshots)')" = 1 ]
echo "aws cli: every operation passed"
`

func TestAWSCLI(t *testing.T) {
	requireTool(t, "/usr/bin/aws", "awscli")
	td := newTestDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", awsCLIScript, "bash", td.url(), t.TempDir())
	cmd.Env = realClientEnv(t, testSecretAccessKey)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("AWS CLI: %v\n%s", err, out)
	}
	t.Logf("%s", out)

	// A wrong secret: the CLI reports the exception AWS would have sent.
	bad := exec.CommandContext(ctx, "/usr/bin/aws", "--endpoint-url", td.url(), "ebs", "start-snapshot", "--volume-size", "1")
	bad.Env = realClientEnv(t, "not-the-secret-of-this-key")
	out, err = bad.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "InvalidSignatureException") {
		t.Fatalf("AWS CLI with a wrong secret: %v\n%s", err, out)
	}
	bad = exec.CommandContext(ctx, "/usr/bin/aws", "--endpoint-url", td.url(), "ec2", "describe-snapshots")
	bad.Env = realClientEnv(t, "not-the-secret-of-this-key")
	out, err = bad.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "AuthFailure") {
		t.Fatalf("AWS CLI ec2 with a wrong secret: %v\n%s", err, out)
	}
}

const boto3Script = `
import base64, hashlib, os, sys
import boto3, botocore
E = sys.argv[1]
ebs = boto3.client("ebs", endpoint_url=E)
ec2 = boto3.client("ec2", endpoint_url=E)
block = os.urandom(524288)
digest = hashlib.sha256(block).digest()
snap = ebs.start_snapshot(VolumeSize=1, ClientToken="boto3-token")["SnapshotId"]
assert ebs.start_snapshot(VolumeSize=1, ClientToken="boto3-token")["SnapshotId"] == snap
ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=3, BlockData=block, DataLength=len(block),
    Checksum=base64.b64encode(digest).decode(), ChecksumAlgorithm="SHA256")
agg = base64.b64encode(hashlib.sha256(digest).digest()).decode()
st = ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=1, Checksum=agg,
    ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")["Status"]
assert st == "completed", st
ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap])
blocks = ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]
assert [b["BlockIndex"] for b in blocks] == [3], blocks
got = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=3, BlockToken=blocks[0]["BlockToken"])["BlockData"].read()
assert got == block
changed = ebs.list_changed_blocks(SecondSnapshotId=snap)["ChangedBlocks"]
assert [c["BlockIndex"] for c in changed] == [3], changed
ec2.create_tags(Resources=[snap], Tags=[{"Key": "who", "Value": "boto3"}])
found = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:who", "Values": ["boto3"]}])["Snapshots"]
assert [s["SnapshotId"] for s in found] == [snap], found
ec2.delete_tags(Resources=[snap], Tags=[{"Key": "who"}])
ec2.delete_snapshot(SnapshotId=snap)
assert ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"] == []
bad = boto3.client("ebs", endpoint_url=E, aws_secret_access_key="not-the-secret-of-this-key", aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"])
try:
    bad.start_snapshot(VolumeSize=1)
    raise SystemExit("a wrong secret was accepted")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "InvalidSignatureException", e.response
print("boto3: every operation passed")
`

func TestBoto3(t *testing.T) {
	requireTool(t, "/usr/bin/python3", "python3")
	if err := exec.Command("/usr/bin/python3", "-c", "import boto3").Run(); err != nil {
		t.Fatalf("boto3 is missing: `make deps` installs Debian's python3-boto3 (%v)", err)
	}
	td := newTestDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", "-c", boto3Script, td.url())
	cmd.Env = realClientEnv(t, testSecretAccessKey)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("boto3: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
