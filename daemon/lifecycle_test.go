package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/ebsd/ebsd/cas"
)

func newEC2Client(endpoint string) *ec2.Client {
	return ec2.New(ec2.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(endpoint),
		Credentials:      credentials.NewStaticCredentialsProvider(testAccessKeyID, testSecretAccessKey, ""),
		RetryMaxAttempts: 1,
	})
}

// wantEC2Error fails unless err carries the EC2 error code.
func wantEC2Error(t testing.TB, err error, code string) {
	t.Helper()
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != code {
		t.Fatalf("want EC2 error %s, got %v", code, err)
	}
	if apiErr.ErrorMessage() == "" {
		t.Fatalf("EC2 error %s has no message", code)
	}
}

func describeIDs(t testing.TB, c *ec2.Client, in *ec2.DescribeSnapshotsInput) []string {
	t.Helper()
	out, err := c.DescribeSnapshots(context.Background(), in)
	if err != nil {
		t.Fatalf("DescribeSnapshots: %v", err)
	}
	var ids []string
	for _, s := range out.Snapshots {
		ids = append(ids, aws.ToString(s.SnapshotId))
	}
	slices.Sort(ids)
	return ids
}

func sorted(ids ...string) []string { slices.Sort(ids); return ids }

func filter(name string, values ...string) ec2types.Filter {
	return ec2types.Filter{Name: aws.String(name), Values: values}
}

func TestEC2DescribeSnapshots(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	e := newEC2Client(td.url())
	ctx := context.Background()
	tag := func(k, v string) ebstypes.Tag { return ebstypes.Tag{Key: aws.String(k), Value: aws.String(v)} }
	s1 := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Description: aws.String("web server root"),
		Tags: []ebstypes.Tag{tag("env", "prod"), tag("team", "a")}}).SnapshotId)
	s2 := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(2), Description: aws.String("db data"),
		Tags: []ebstypes.Tag{tag("env", "dev")}}).SnapshotId)
	s3 := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Tags: []ebstypes.Tag{tag("env", "prod")}}).SnapshotId)
	for _, id := range []string{s1, s2} {
		if _, err := complete(ctx, c, id, nil); err != nil {
			t.Fatal(err)
		}
	}

	if got := describeIDs(t, e, &ec2.DescribeSnapshotsInput{}); !slices.Equal(got, sorted(s1, s2, s3)) {
		t.Fatalf("all: %v", got)
	}
	if got := describeIDs(t, e, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}}); len(got) != 3 {
		t.Fatalf("owner self: %v", got)
	}
	if got := describeIDs(t, e, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"999999999999"}}); len(got) != 0 {
		t.Fatalf("other owner: %v", got)
	}
	out, err := e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{s1}})
	if err != nil || len(out.Snapshots) != 1 {
		t.Fatalf("by id: %v %v", out, err)
	}
	s := out.Snapshots[0]
	if s.State != ec2types.SnapshotStateCompleted || aws.ToString(s.Progress) != "100%" || aws.ToInt32(s.VolumeSize) != 1 ||
		aws.ToString(s.Description) != "web server root" || aws.ToString(s.OwnerId) != defaultAccountID || aws.ToBool(s.Encrypted) ||
		s.StorageTier != ec2types.StorageTierStandard || s.StartTime == nil || time.Since(*s.StartTime) > time.Minute || len(s.Tags) != 2 {
		t.Fatalf("snapshot as EC2 describes it: %+v", s)
	}
	_, err = e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{s1, "snap-0123456789abcdef0"}})
	wantEC2Error(t, err, "InvalidSnapshot.NotFound")

	for _, tc := range []struct {
		name    string
		filters []ec2types.Filter
		want    []string
	}{
		{"snapshot-id", []ec2types.Filter{filter("snapshot-id", s2)}, []string{s2}},
		{"status", []ec2types.Filter{filter("status", "pending")}, []string{s3}},
		{"volume-size", []ec2types.Filter{filter("volume-size", "2")}, []string{s2}},
		{"tag:KEY", []ec2types.Filter{filter("tag:env", "prod")}, sorted(s1, s3)},
		{"tag-key", []ec2types.Filter{filter("tag-key", "team")}, []string{s1}},
		{"description wildcard", []ec2types.Filter{filter("description", "*root*")}, []string{s1}},
		{"values are OR", []ec2types.Filter{filter("volume-size", "1", "2")}, sorted(s1, s2, s3)},
		{"filters are AND", []ec2types.Filter{filter("status", "completed"), filter("tag:env", "prod")}, []string{s1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := describeIDs(t, e, &ec2.DescribeSnapshotsInput{Filters: tc.filters}); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	_, err = e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{Filters: []ec2types.Filter{filter("colour", "blue")}})
	wantEC2Error(t, err, "InvalidParameterValue")

	// Pagination with the SDK's paginator: every snapshot once, pages of at most 5.
	for range 12 {
		startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
	}
	p := ec2.NewDescribeSnapshotsPaginator(e, &ec2.DescribeSnapshotsInput{MaxResults: aws.Int32(5)})
	seen := map[string]bool{}
	pages := 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(page.Snapshots) > 5 {
			t.Fatalf("page of %d", len(page.Snapshots))
		}
		for _, s := range page.Snapshots {
			if seen[aws.ToString(s.SnapshotId)] {
				t.Fatalf("%s on two pages", aws.ToString(s.SnapshotId))
			}
			seen[aws.ToString(s.SnapshotId)] = true
		}
	}
	if len(seen) != 15 || pages != 3 {
		t.Fatalf("%d snapshots on %d pages, want 15 on 3", len(seen), pages)
	}
	_, err = e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{MaxResults: aws.Int32(5), NextToken: aws.String("Zm9yZ2Vk")})
	wantEC2Error(t, err, "InvalidPaginationToken")
	_, err = e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{MaxResults: aws.Int32(2)})
	wantEC2Error(t, err, "InvalidParameterValue")
}

func TestEC2WaiterTagsAndDelete(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	e := newEC2Client(td.url())
	ctx := context.Background()
	id := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	if err := putBlock(ctx, c, id, 0, block(1)); err != nil {
		t.Fatal(err)
	}
	// The waiter polls DescribeSnapshots until the snapshot completes a moment later.
	done := make(chan error, 1)
	go func() {
		time.Sleep(700 * time.Millisecond)
		_, err := complete(ctx, c, id, map[int32][]byte{0: block(1)})
		done <- err
	}()
	w := ec2.NewSnapshotCompletedWaiter(e, func(o *ec2.SnapshotCompletedWaiterOptions) {
		o.MinDelay, o.MaxDelay = 100*time.Millisecond, 300*time.Millisecond
	})
	if err := w.Wait(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}}, 30*time.Second); err != nil {
		t.Fatalf("waiter: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	tags := func() map[string]string {
		out, err := e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, t := range out.Snapshots[0].Tags {
			m[aws.ToString(t.Key)] = aws.ToString(t.Value)
		}
		return m
	}
	ec2Tag := func(k, v string) ec2types.Tag { return ec2types.Tag{Key: aws.String(k), Value: aws.String(v)} }
	if _, err := e.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: []ec2types.Tag{ec2Tag("Name", "root"), ec2Tag("k", "v")}}); err != nil {
		t.Fatal(err)
	}
	if got := tags(); got["Name"] != "root" || got["k"] != "v" || len(got) != 2 {
		t.Fatalf("after CreateTags: %v", got)
	}
	if _, err := e.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: []ec2types.Tag{ec2Tag("k", "v2")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{id}, Tags: []ec2types.Tag{ec2Tag("k", "other")}}); err != nil {
		t.Fatal(err)
	}
	if got := tags(); got["k"] != "v2" {
		t.Fatalf("DeleteTags with another value removed the tag: %v", got)
	}
	if _, err := e.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{id}, Tags: []ec2types.Tag{{Key: aws.String("k")}}}); err != nil {
		t.Fatal(err)
	}
	if got := tags(); len(got) != 1 || got["Name"] != "root" {
		t.Fatalf("after DeleteTags k: %v", got)
	}
	_, err := e.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: []ec2types.Tag{ec2Tag("aws:x", "y")}})
	wantEC2Error(t, err, "InvalidParameterValue")
	many := make([]ec2types.Tag, 50)
	for i := range many {
		many[i] = ec2Tag("t"+strconv.Itoa(i), "v")
	}
	_, err = e.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: many})
	wantEC2Error(t, err, "TagLimitExceeded")
	_, err = e.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{"snap-0123456789abcdef0"}, Tags: []ec2types.Tag{ec2Tag("a", "b")}})
	wantEC2Error(t, err, "InvalidSnapshot.NotFound")

	// Deleting removes it from EC2 and from the EBS direct APIs at once.
	if _, err := e.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	_, err = e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
	wantEC2Error(t, err, "InvalidSnapshot.NotFound")
	_, err = c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(id)})
	wantError[*ebstypes.ResourceNotFoundException](t, err)
	_, err = e.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)})
	wantEC2Error(t, err, "InvalidSnapshot.NotFound")

	// Deleting a pending snapshot aborts it and releases its blocks.
	pending := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	if err := putBlock(ctx, c, pending, 3, block(3)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(pending)}); err != nil {
		t.Fatal(err)
	}
	wantError[*ebstypes.ResourceNotFoundException](t, putBlock(ctx, c, pending, 4, block(4)))
	rep := gcNow(t, td, false)
	if st, _ := td.store().Stats(ctx); st.UniqueBlocks != 0 || st.MappedBlocks != 0 || rep.BlocksReclaimed != 2 {
		t.Fatalf("after deleting everything and GC: %+v, report %+v", st, rep)
	}
	// Unknown actions answer in EC2's error form.
	_, err = e.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
	wantEC2Error(t, err, "InvalidAction")
}

// gcNow runs a garbage collection through the admin endpoint.
func gcNow(t testing.TB, td *testDaemon, dryRun bool) cas.GCReport {
	t.Helper()
	path := "/ebsd/v1/gc"
	if dryRun {
		path += "?dryRun=true"
	}
	r := td.raw("POST", path, nil, nil, 0)
	var rep cas.GCReport
	if r.status != 200 || json.Unmarshal(r.body, &rep) != nil {
		t.Fatalf("POST %s: %d %s", path, r.status, r.body)
	}
	return rep
}

// readSnapshot reads a completed snapshot's whole view through the API.
func readSnapshot(t testing.TB, c *ebs.Client, id string) map[int32][]byte {
	t.Helper()
	out := map[int32][]byte{}
	for _, b := range listAll(t, c, id, 1000) {
		out[aws.ToInt32(b.BlockIndex)] = getBlock(t, c, id, aws.ToInt32(b.BlockIndex), b.BlockToken)
	}
	return out
}

func sameBlocks(t testing.TB, got, want map[int32][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d blocks, want %d", len(got), len(want))
	}
	for i, b := range want {
		if !bytes.Equal(got[i], b) {
			t.Fatalf("block %d differs", i)
		}
	}
}

func uniqueBlock(seed int) []byte {
	b := make([]byte, cas.BlockSize)
	copy(b, fmt.Sprintf("unique block %d", seed))
	for i := 4096; i < len(b); i += 512 {
		b[i] = byte(seed*7 + i/512)
	}
	return b
}

// A → B → C; deleting B leaves C byte-identical; deleting everything gives the space back.
func TestDeleteParentThenEverything(t *testing.T) {
	td := newTestDaemon(t, func(c *config) { c.vlogFileSize = 1 << 20; c.compression = cas.CompressNone })
	c := td.client()
	e := newEC2Client(td.url())
	ctx := context.Background()
	layer := func(seeds ...int) map[int32][]byte {
		m := map[int32][]byte{}
		for _, s := range seeds {
			m[int32(s%100)] = uniqueBlock(s)
		}
		return m
	}
	a := writeSnapshot(t, c, "", 1, layer(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))
	b := writeSnapshot(t, c, a, 1, layer(101, 102, 120))
	cc := writeSnapshot(t, c, b, 1, layer(202, 230))
	wantC := readSnapshot(t, c, cc)
	before := duKB(t, td.cfg.dataDir)

	if _, err := e.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(b)}); err != nil {
		t.Fatal(err)
	}
	if dry := gcNow(t, td, true); dry.BlocksReclaimed != 0 {
		t.Fatalf("with C alive nothing of B may go: %+v", dry)
	}
	gcNow(t, td, false)
	sameBlocks(t, readSnapshot(t, c, cc), wantC)

	for _, id := range []string{a, cc} {
		if _, err := e.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)}); err != nil {
			t.Fatal(err)
		}
	}
	rep := gcNow(t, td, false)
	st, _ := td.store().Stats(ctx)
	after := duKB(t, td.cfg.dataDir)
	t.Logf("du of the data dir: %d KiB before, %d KiB after; report %+v", before, after, rep)
	if st.UniqueBlocks != 0 || st.StoredBytes != 0 || rep.BlocksReclaimed != 21 || after >= before/2 {
		t.Fatalf("after deleting everything: %+v, du %d → %d KiB", st, before, after)
	}
}

// kill -9 in the middle of a collection leaves a store whose live snapshots read back
// identical, and the next collection finishes the job.
func TestKill9MidGC(t *testing.T) {
	dir := t.TempDir()
	env := []string{"EBSD_GC_INTERVAL=0", "EBSD_COMPRESSION=none", "EBSD_VLOG_FILE_MB=4"}
	child := startChild(t, dir, env...)
	c := child.client()
	e := newEC2Client("http://" + child.addr)
	blocks := func(base, n int) map[int32][]byte {
		m := map[int32][]byte{}
		for i := range n {
			m[int32(i)] = uniqueBlock(base + i)
		}
		return m
	}
	a := writeSnapshot(t, c, "", 1, blocks(0, 96))
	b := writeSnapshot(t, c, a, 1, blocks(1000, 32))
	x := writeSnapshot(t, c, "", 1, blocks(2000, 96))
	keep := writeSnapshot(t, c, "", 1, blocks(3000, 8))
	want := map[string]map[int32][]byte{b: readSnapshot(t, c, b), keep: readSnapshot(t, c, keep)}
	for _, id := range []string{a, x} {
		if _, err := e.DeleteSnapshot(context.Background(), &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)}); err != nil {
			t.Fatal(err)
		}
	}
	interrupted := 0
	for i, delay := range []time.Duration{5 * time.Millisecond, 20 * time.Millisecond, 60 * time.Millisecond, 150 * time.Millisecond, 400 * time.Millisecond} {
		go exec.Command("curl", "-s", "-X", "POST", "http://"+child.addr+"/ebsd/v1/gc").Run()
		time.Sleep(delay)
		child.kill9(t)
		if !strings.Contains(child.logText(), "msg=\"garbage collection\"") {
			interrupted++
		}
		child = startChild(t, dir, env...)
		c = child.client()
		for id, blocks := range want {
			sameBlocks(t, readSnapshot(t, c, id), blocks)
		}
		_, err := newEC2Client("http://"+child.addr).DescribeSnapshots(context.Background(), &ec2.DescribeSnapshotsInput{SnapshotIds: []string{x}})
		if err == nil || !strings.Contains(err.Error(), "InvalidSnapshot.NotFound") {
			t.Fatalf("iteration %d: deleted snapshot back after kill -9: %v", i, err)
		}
	}
	r, err := exec.Command("curl", "-s", "-X", "POST", "http://"+child.addr+"/ebsd/v1/gc").Output()
	if err != nil {
		t.Fatal(err)
	}
	var rep cas.GCReport
	if err := json.Unmarshal(r, &rep); err != nil {
		t.Fatalf("gc report %s: %v", r, err)
	}
	for id, blocks := range want {
		sameBlocks(t, readSnapshot(t, c, id), blocks)
	}
	t.Logf("%d of 5 kills landed before a collection finished; final collection: %+v", interrupted, rep)
	if interrupted == 0 {
		t.Log("NOTE: no kill interrupted a collection on this run")
	}
	child.terminate(t)
}

// Some tools send EC2 Query requests as GET with the parameters in the query string.
func TestEC2QueryOverGET(t *testing.T) {
	td := newTestDaemon(t)
	id := aws.ToString(startSnapshot(t, td.client(), &ebs.StartSnapshotInput{VolumeSize: aws.Int64(3)}).SnapshotId)
	r := td.raw("GET", "/?Action=DescribeSnapshots&Version=2016-11-15&SnapshotId.1="+id, nil, nil, 0)
	body := string(r.body)
	if r.status != 200 || !strings.Contains(body, "<DescribeSnapshotsResponse") || !strings.Contains(body, "<snapshotId>"+id+"</snapshotId>") ||
		!strings.Contains(body, "<volumeSize>3</volumeSize>") || !strings.Contains(body, "<status>pending</status>") {
		t.Fatalf("GET DescribeSnapshots: %d\n%s", r.status, body)
	}
	r = td.raw("GET", "/?Action=DescribeSnapshots&Version=2016-11-15&SnapshotId.1=snap-0123456789abcdef0", nil, nil, 0)
	if r.status != 400 || !strings.Contains(string(r.body), "<Code>InvalidSnapshot.NotFound</Code>") {
		t.Fatalf("GET DescribeSnapshots of an unknown id: %d\n%s", r.status, r.body)
	}
}
