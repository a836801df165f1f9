package api

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// Version is required and must be the one ebsd speaks, as on AWS.
func TestEC2RequiresVersion2016_11_15(t *testing.T) {
	a := newTestAPI(t)
	id := a.completed()
	wantEC2Error(t, a.ec2("Action=DescribeSnapshots"), 400, "MissingParameter")
	wantEC2Error(t, a.ec2("Action=DescribeSnapshots&Version="), 400, "MissingParameter")
	msg := wantEC2Error(t, a.ec2("Action=DescribeSnapshots&Version=2014-10-01"), 400, "NoSuchVersion")
	if msg != "The requested version (2014-10-01) of service AmazonEC2 does not exist" {
		t.Fatalf("NoSuchVersion message %q", msg)
	}
	wantEC2Error(t, a.ec2("Action=DeleteSnapshot&Version=2016-11-16&SnapshotId="+id), 400, "NoSuchVersion")
	wantEC2Error(t, a.ec2("Version=2016-11-15"), 400, "MissingAction")
	wantEC2Error(t, a.ec2("Action=RunInstances&Version=2016-11-15"), 400, "InvalidAction")
	if a.store.mutating != 0 {
		t.Fatal("a refused request reached the store")
	}
	// GET with the parameters in the query string is the same protocol.
	rec := a.do("GET", "/?Action=DescribeSnapshots&Version=2016-11-15&SnapshotId.1="+id, nil, nil)
	if got := describe(t, rec); !slices.Equal(got, []string{id}) {
		t.Fatalf("GET describe: %v", got)
	}
	wantEC2Error(t, a.do("GET", "/?Action=DescribeSnapshots", nil, nil), 400, "MissingParameter")
}

// DryRun=true answers DryRunOperation once the request is valid and changes nothing;
// any other spelling is refused rather than taken as false (a real deletion).
func TestEC2DryRun(t *testing.T) {
	a := newTestAPI(t)
	id := a.completed()
	for _, v := range []string{"1", "TRUE", "yes", "", "true&DryRun=true"} {
		t.Run("DryRun="+v, func(t *testing.T) {
			wantEC2Error(t, a.ec2v("DeleteSnapshot", "SnapshotId="+id+"&DryRun="+v), 400, "InvalidParameterValue")
		})
	}
	for _, req := range []struct{ action, params string }{
		{"DeleteSnapshot", "SnapshotId=" + id},
		{"CreateTags", "ResourceId.1=" + id + "&Tag.1.Key=k&Tag.1.Value=v"},
		{"DeleteTags", "ResourceId.1=" + id},
		{"DescribeSnapshots", ""},
	} {
		t.Run(req.action, func(t *testing.T) {
			wantEC2Error(t, a.ec2v(req.action, req.params+"&DryRun=true"), http.StatusPreconditionFailed, "DryRunOperation")
		})
	}
	// A dry run of an invalid request reports what is wrong with it.
	wantEC2Error(t, a.ec2v("DeleteSnapshot", "SnapshotId=vol-1&DryRun=true"), 400, "InvalidSnapshotID.Malformed")
	wantEC2Error(t, a.ec2("Action=Nothing&Version=2016-11-15&DryRun=true"), 400, "InvalidAction")
	if a.store.mutating != 0 || a.store.snaps[id] == nil {
		t.Fatal("a dry run or refused request changed the store")
	}
	if rec := a.ec2v("DeleteSnapshot", "SnapshotId="+id+"&DryRun=false"); rec.Code != 200 || a.store.snaps[id] != nil {
		t.Fatalf("DryRun=false: %d %s", rec.Code, rec.Body)
	}
}

// Parameter text that is not UTF-8 is refused; it used to be stored as U+FFFD.
func TestEC2RefusesInvalidUTF8(t *testing.T) {
	a := newTestAPI(t)
	id := a.completed()
	for name, params := range map[string]string{
		"tag key":      "CreateTags&ResourceId.1=" + id + "&Tag.1.Key=%FF&Tag.1.Value=v",
		"tag value":    "CreateTags&ResourceId.1=" + id + "&Tag.1.Key=k&Tag.1.Value=caf%E9",
		"delete key":   "DeleteTags&ResourceId.1=" + id + "&Tag.1.Key=%C3",
		"filter value": "DescribeSnapshots&Filter.1.Name=description&Filter.1.Value.1=%FF*",
		"filter name":  "DescribeSnapshots&Filter.1.Name=tag:%FF&Filter.1.Value.1=x",
		"param name":   "DescribeSnapshots&%FF=1",
		"surrogate":    "CreateTags&ResourceId.1=" + id + "&Tag.1.Key=%ED%A0%80",
	} {
		t.Run(name, func(t *testing.T) {
			action, params, _ := strings.Cut(params, "&")
			wantEC2Error(t, a.ec2v(action, params), 400, "InvalidParameterValue")
		})
	}
	if a.store.mutating != 0 {
		t.Fatal("a refused request reached the store")
	}
}

func TestEC2CreateTagsCountsCharacters(t *testing.T) {
	a := newTestAPI(t)
	id := a.completed()
	key, value := strings.Repeat("😀", 127), strings.Repeat("é", 255)
	rec := a.ec2v("CreateTags", "ResourceId.1="+id+"&Tag.1.Key="+formValue(key)+"&Tag.1.Value="+formValue(value))
	if rec.Code != 200 {
		t.Fatalf("127-character key, 255-character value: %d %s", rec.Code, rec.Body)
	}
	if tags := a.store.snaps[id].snap.Tags; len(tags) != 1 || tags[0].Key != key || tags[0].Value != value {
		t.Fatalf("stored tags %q", tags)
	}
	wantEC2Error(t, a.ec2v("CreateTags", "ResourceId.1="+id+"&Tag.1.Key="+formValue(key+"x")), 400, "InvalidParameterValue")
	wantEC2Error(t, a.ec2v("CreateTags", "ResourceId.1="+id+"&Tag.1.Key=k&Tag.1.Value="+formValue(value+"x")), 400, "InvalidParameterValue")
}

// A CreateTags or DeleteTags naming a snapshot that does not exist fails whole: the
// snapshots named before it are not changed either.
func TestEC2TagsChangeAllOrNone(t *testing.T) {
	a := newTestAPI(t)
	id := a.completed()
	missing := "snap-0123456789abcdef0"
	wantEC2Error(t, a.ec2v("CreateTags", "ResourceId.1="+id+"&ResourceId.2="+missing+"&Tag.1.Key=k&Tag.1.Value=v"), 400, "InvalidSnapshot.NotFound")
	if tags := a.store.snaps[id].snap.Tags; len(tags) != 0 {
		t.Fatalf("a failed CreateTags tagged %s: %q", id, tags)
	}
	if rec := a.ec2v("CreateTags", "ResourceId.1="+id+"&Tag.1.Key=k&Tag.1.Value=v"); rec.Code != 200 {
		t.Fatalf("CreateTags: %d %s", rec.Code, rec.Body)
	}
	wantEC2Error(t, a.ec2v("DeleteTags", "ResourceId.1="+id+"&ResourceId.2="+missing+"&Tag.1.Key=k"), 400, "InvalidSnapshot.NotFound")
	if tags := a.store.snaps[id].snap.Tags; len(tags) != 1 {
		t.Fatalf("a failed DeleteTags changed the tags of %s: %q", id, tags)
	}
}

func TestEC2RefusesInvalidRequests(t *testing.T) {
	a := newTestAPI(t)
	id := a.completed()
	for _, tc := range []struct{ name, action, params, code string }{
		{"describe MaxResults 4", "DescribeSnapshots", "MaxResults=4", "InvalidParameterValue"},
		{"describe MaxResults 1001", "DescribeSnapshots", "MaxResults=1001", "InvalidParameterValue"},
		{"describe MaxResults +5", "DescribeSnapshots", "MaxResults=%2B5", "InvalidParameterValue"},
		{"describe MaxResults 05", "DescribeSnapshots", "MaxResults=05", "InvalidParameterValue"},
		{"describe MaxResults empty", "DescribeSnapshots", "MaxResults=", "InvalidParameterValue"},
		{"describe bad token", "DescribeSnapshots", "NextToken=AAAA", "InvalidPaginationToken"},
		{"describe unknown filter", "DescribeSnapshots", "Filter.1.Name=color&Filter.1.Value.1=red", "InvalidParameterValue"},
		{"describe malformed id", "DescribeSnapshots", "SnapshotId.1=snap-XYZ", "InvalidSnapshotID.Malformed"},
		{"describe unknown id", "DescribeSnapshots", "SnapshotId.1=snap-0123456789abcdef0", "InvalidSnapshot.NotFound"},
		// A list index that is not a decimal used to be read leniently ("+1" as 1) or
		// skipped: skipping SnapshotId.x would have described every snapshot.
		{"describe SnapshotId.+1", "DescribeSnapshots", "SnapshotId.%2B1=" + id, "UnknownParameter"},
		{"describe SnapshotId.x", "DescribeSnapshots", "SnapshotId.x=" + id, "UnknownParameter"},
		{"describe SnapshotId.0", "DescribeSnapshots", "SnapshotId.0=" + id, "UnknownParameter"},
		{"describe SnapshotId.01", "DescribeSnapshots", "SnapshotId.01=" + id, "UnknownParameter"},
		{"describe Filter.-1", "DescribeSnapshots", "Filter.-1.Name=status&Filter.-1.Value.1=completed", "UnknownParameter"},
		{"describe Filter value +1", "DescribeSnapshots", "Filter.1.Name=status&Filter.1.Value.%2B1=completed", "UnknownParameter"},
		{"describe id twice", "DescribeSnapshots", "SnapshotId.1=" + id + "&SnapshotId.1=" + id, "InvalidParameterValue"},
		{"delete no id", "DeleteSnapshot", "", "MissingParameter"},
		{"delete malformed id", "DeleteSnapshot", "SnapshotId=vol-1", "InvalidSnapshotID.Malformed"},
		{"delete unknown", "DeleteSnapshot", "SnapshotId=snap-0123456789abcdef0", "InvalidSnapshot.NotFound"},
		{"create no resource", "CreateTags", "Tag.1.Key=k", "MissingParameter"},
		{"create resource not a snapshot", "CreateTags", "ResourceId.1=vol-1&Tag.1.Key=k", "InvalidID"},
		{"create resource index +1", "CreateTags", "ResourceId.%2B1=" + id + "&Tag.1.Key=k", "UnknownParameter"},
		{"create no tag", "CreateTags", "ResourceId.1=" + id, "MissingParameter"},
		{"create tag index x", "CreateTags", "ResourceId.1=" + id + "&Tag.x.Key=k", "UnknownParameter"},
		{"create empty key", "CreateTags", "ResourceId.1=" + id + "&Tag.1.Key=&Tag.1.Value=v", "InvalidParameterValue"},
		{"create aws: key", "CreateTags", "ResourceId.1=" + id + "&Tag.1.Key=aws:x", "InvalidParameterValue"},
		{"create unknown snapshot", "CreateTags", "ResourceId.1=snap-0123456789abcdef0&Tag.1.Key=k", "InvalidSnapshot.NotFound"},
		{"delete tags no resource", "DeleteTags", "Tag.1.Key=k", "MissingParameter"},
		{"delete tags unknown snapshot", "DeleteTags", "ResourceId.1=snap-0123456789abcdef0", "InvalidSnapshot.NotFound"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantEC2Error(t, a.ec2v(tc.action, tc.params), 400, tc.code)
		})
	}
	if snap := a.store.snaps[id]; snap == nil || len(snap.snap.Tags) != 0 {
		t.Fatal("a refused request changed the snapshot")
	}
}

// The EC2 actions do what they say, with the XML shape the SDKs read.
func TestEC2Lifecycle(t *testing.T) {
	a := newTestAPI(t)
	id := a.completed()
	other := a.start(`{"VolumeSize":1,"Description":"other"}`)
	if rec := a.ec2v("CreateTags", "ResourceId.1="+id+"&Tag.1.Key=env&Tag.1.Value=test"); rec.Code != 200 || !strings.Contains(rec.Body.String(), "<return>true</return>") {
		t.Fatalf("CreateTags: %d %s", rec.Code, rec.Body)
	}
	for _, tc := range []struct {
		params string
		want   []string
	}{
		{"Filter.1.Name=tag:env&Filter.1.Value.1=te?t", []string{id}},
		{"Filter.1.Name=tag-key&Filter.1.Value.1=env", []string{id}},
		{"Filter.1.Name=status&Filter.1.Value.1=pending", []string{other}},
		{"Filter.1.Name=description&Filter.1.Value.1=oth*", []string{other}},
		{"Filter.1.Name=status&Filter.1.Value.1=completed&Filter.1.Value.2=pending&Filter.2.Name=volume-size&Filter.2.Value.1=1", []string{id, other}},
		{"OwnerId.1=self&SnapshotId.1=" + other, []string{other}},
		{"Owner.1=999988887777", nil},
	} {
		got := describe(t, a.ec2v("DescribeSnapshots", tc.params))
		slices.Sort(got)
		want := slices.Clone(tc.want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", tc.params, got, want)
		}
	}
	if rec := a.ec2v("DeleteTags", "ResourceId.1="+id+"&Tag.1.Key=env&Tag.1.Value=other"); rec.Code != 200 || len(a.store.snaps[id].snap.Tags) != 1 {
		t.Fatalf("DeleteTags with another value removed the tag: %d %s", rec.Code, rec.Body)
	}
	if rec := a.ec2v("DeleteTags", "ResourceId.1="+id); rec.Code != 200 || len(a.store.snaps[id].snap.Tags) != 0 {
		t.Fatalf("DeleteTags without Tag: %d %s", rec.Code, rec.Body)
	}
	if rec := a.ec2v("DeleteSnapshot", "SnapshotId="+id); rec.Code != 200 || a.store.snaps[id] != nil {
		t.Fatalf("DeleteSnapshot: %d %s", rec.Code, rec.Body)
	}
}

func TestEC2DescribePages(t *testing.T) {
	a := newTestAPI(t)
	var all []string
	for range 7 {
		all = append(all, a.start(`{"VolumeSize":1}`))
	}
	slices.Sort(all)
	var got []string
	params := "MaxResults=5"
	for range 3 {
		rec := a.ec2v("DescribeSnapshots", params)
		got = append(got, describe(t, rec)...)
		_, rest, found := strings.Cut(rec.Body.String(), "<nextToken>")
		if !found {
			break
		}
		tok, _, _ := strings.Cut(rest, "</nextToken>")
		params = "MaxResults=5&NextToken=" + formValue(tok)
	}
	if !slices.Equal(got, all) {
		t.Fatalf("pages %v, want %v", got, all)
	}
}
