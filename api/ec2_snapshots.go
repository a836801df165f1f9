package api

import (
	"encoding/xml"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ebsd/ebsd/cas"
)

type ec2TagXML struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

type ec2SnapshotXML struct {
	SnapshotID     string      `xml:"snapshotId"`
	VolumeID       string      `xml:"volumeId"`
	Status         string      `xml:"status"`
	StatusMessage  string      `xml:"statusMessage,omitempty"`
	StartTime      string      `xml:"startTime"`
	CompletionTime string      `xml:"completionTime,omitempty"`
	Progress       string      `xml:"progress"`
	OwnerID        string      `xml:"ownerId"`
	VolumeSize     int64       `xml:"volumeSize"`
	Description    string      `xml:"description"`
	Encrypted      bool        `xml:"encrypted"`
	StorageTier    string      `xml:"storageTier"`
	TagSet         []ec2TagXML `xml:"tagSet>item,omitempty"`
	// ParentSnapshotID is an ebsd extension: EC2 has no such element, SDKs ignore it.
	ParentSnapshotID string `xml:"parentSnapshotId,omitempty"`
}

func ec2Time(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func toEC2Snapshot(s cas.Snapshot) ec2SnapshotXML {
	out := ec2SnapshotXML{
		SnapshotID:       s.ID,
		VolumeID:         "vol-ffffffff", // what EC2 reports for snapshots made with the EBS direct APIs
		Status:           string(s.Status),
		StatusMessage:    s.StatusMessage,
		StartTime:        ec2Time(s.StartTime),
		OwnerID:          s.OwnerID,
		VolumeSize:       s.VolumeSize,
		Description:      s.Description,
		StorageTier:      "standard",
		ParentSnapshotID: s.ParentID,
		Progress:         map[cas.Status]string{cas.StatusCompleted: "100%"}[s.Status],
	}
	if out.Progress == "" {
		out.Progress = "0%"
	}
	if !s.CompleteTime.IsZero() {
		out.CompletionTime = ec2Time(s.CompleteTime)
	}
	for _, t := range s.Tags {
		out.TagSet = append(out.TagSet, ec2TagXML{t.Key, t.Value})
	}
	return out
}

const (
	minDescribeResults = 5
	maxDescribeResults = 1000
)

// snapshotFilter is one Filter.N: a name and values, any of which may match (with *
// and ? wildcards, as EC2 filters have).
type snapshotFilter struct {
	name     string
	patterns []wildcard // compiled once per request, matched against every snapshot
}

var filterNames = []string{"snapshot-id", "status", "volume-size", "tag-key", "description", "owner-id", "volume-id", "storage-tier", "encrypted"}

func (f snapshotFilter) field(s cas.Snapshot) []string {
	switch {
	case f.name == "snapshot-id":
		return []string{s.ID}
	case f.name == "status":
		return []string{string(s.Status)}
	case f.name == "volume-size":
		return []string{strconv.FormatInt(s.VolumeSize, 10)}
	case f.name == "description":
		return []string{s.Description}
	case f.name == "owner-id":
		return []string{s.OwnerID}
	case f.name == "volume-id":
		return []string{"vol-ffffffff"}
	case f.name == "storage-tier":
		return []string{"standard"}
	case f.name == "encrypted":
		return []string{strconv.FormatBool(s.Encrypted)}
	case f.name == "tag-key":
		keys := make([]string, len(s.Tags))
		for i, t := range s.Tags {
			keys[i] = t.Key
		}
		return keys
	case strings.HasPrefix(f.name, "tag:"):
		key := strings.TrimPrefix(f.name, "tag:")
		for _, t := range s.Tags {
			if t.Key == key {
				return []string{t.Value}
			}
		}
	}
	return nil
}

func (f snapshotFilter) matches(s cas.Snapshot) bool {
	for _, have := range f.field(s) {
		for _, want := range f.patterns {
			if want.match(have) {
				return true
			}
		}
	}
	return false
}

func (s *Server) describeSnapshots(r *http.Request, form url.Values, dryRun bool) (any, *ec2Error) {
	owner := s.owner(r)
	var filters []snapshotFilter
	prefixes, e := formStructs(form, "Filter")
	if e != nil {
		return nil, e
	}
	for _, prefix := range prefixes {
		values, e := formList(form, prefix+".Value")
		if e != nil {
			return nil, e
		}
		f := snapshotFilter{name: form.Get(prefix + ".Name")}
		if !slices.Contains(filterNames, f.name) && !strings.HasPrefix(f.name, "tag:") {
			return nil, ec2Err(400, "InvalidParameterValue", "The filter '%s' is invalid (ebsd supports %s and tag:KEY)", f.name, strings.Join(filterNames, ", "))
		}
		for _, v := range values {
			f.patterns = append(f.patterns, compileWildcard(v))
		}
		filters = append(filters, f)
	}
	owners, e := formList(form, "Owner")
	if e != nil {
		return nil, e
	}
	ownerIDs, e := formList(form, "OwnerId")
	if e != nil {
		return nil, e
	}
	owners = append(owners, ownerIDs...)
	ids, e := formList(form, "SnapshotId")
	if e != nil {
		return nil, e
	}
	for _, id := range ids {
		if !cas.ValidSnapshotID(id) {
			return nil, ec2Err(400, "InvalidSnapshotID.Malformed", "Invalid id: \"%s\" (expecting \"snap-...\")", id)
		}
	}
	maxResults := 0
	if v, given := form["MaxResults"]; given {
		n, ok := parseDecimal(v[0])
		if !ok || len(v) != 1 || n < minDescribeResults || n > maxDescribeResults {
			return nil, ec2Err(400, "InvalidParameterValue", "Value (%s) for parameter maxResults is invalid. Expecting a value between %d and %d.", v[0], minDescribeResults, maxDescribeResults)
		}
		maxResults = int(n)
	}
	after := ""
	if tok := form.Get("NextToken"); tok != "" {
		var err error
		if after, err = s.tokens.openDescribeToken(tok, owner); err != nil {
			return nil, ec2Err(400, "InvalidPaginationToken", "The pagination token %v", err)
		}
	}
	if dryRun {
		return nil, dryRunSucceeded()
	}

	all := s.store.Snapshots(owner)
	slices.SortFunc(all, func(a, b cas.Snapshot) int { return strings.Compare(a.ID, b.ID) })
	if len(ids) > 0 {
		for _, id := range ids {
			if !slices.ContainsFunc(all, func(x cas.Snapshot) bool { return x.ID == id }) {
				return nil, ec2Err(400, "InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", id)
			}
		}
	}
	var page []ec2SnapshotXML
	next := ""
	for _, snap := range all {
		if snap.ID <= after || !selected(snap, ids, owners, owner, filters) {
			continue
		}
		if maxResults > 0 && len(page) == maxResults {
			next = s.tokens.describeToken(owner, page[len(page)-1].SnapshotID)
			break
		}
		page = append(page, toEC2Snapshot(snap))
	}
	return struct {
		XMLName   xml.Name         `xml:"DescribeSnapshotsResponse"`
		Xmlns     string           `xml:"xmlns,attr"`
		RequestID string           `xml:"requestId"`
		Snapshots []ec2SnapshotXML `xml:"snapshotSet>item"`
		NextToken string           `xml:"nextToken,omitempty"`
	}{Xmlns: ec2Namespace, RequestID: info(r).id, Snapshots: page, NextToken: next}, nil
}

func selected(snap cas.Snapshot, ids, owners []string, self string, filters []snapshotFilter) bool {
	if len(ids) > 0 && !slices.Contains(ids, snap.ID) {
		return false
	}
	if len(owners) > 0 && !slices.ContainsFunc(owners, func(o string) bool { return o == snap.OwnerID || (o == "self" && snap.OwnerID == self) }) {
		return false
	}
	for _, f := range filters {
		if !f.matches(snap) {
			return false
		}
	}
	return true
}

type ec2ReturnXML struct {
	XMLName   xml.Name
	Xmlns     string `xml:"xmlns,attr"`
	RequestID string `xml:"requestId"`
	Return    bool   `xml:"return"`
}

func ec2Return(r *http.Request, action string) ec2ReturnXML {
	return ec2ReturnXML{XMLName: xml.Name{Local: action + "Response"}, Xmlns: ec2Namespace, RequestID: info(r).id, Return: true}
}

// ec2StoreError maps store errors of the lifecycle actions to EC2 error codes.
func (s *Server) ec2StoreError(r *http.Request, id string, err error) *ec2Error {
	switch {
	case errors.Is(err, cas.ErrSnapshotNotFound):
		return ec2Err(400, "InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", id)
	case errors.Is(err, cas.ErrTooManyTags):
		return ec2Err(400, "TagLimitExceeded", "%v", err)
	case errors.Is(err, cas.ErrNoSpace):
		// Even a delete writes a little; below the floor Badger needs, nothing may. EC2's
		// "Unavailable" (503) is retried by the SDKs, and space may come back meanwhile.
		return ec2Err(503, "Unavailable", "%v", err)
	}
	s.log.Error("EC2 action failed", "request_id", info(r).id, "snapshot", id, "err", err)
	return ec2Err(500, "InternalError", "An internal error has occurred (request %s)", info(r).id)
}

func (s *Server) deleteSnapshot(r *http.Request, form url.Values, dryRun bool) (any, *ec2Error) {
	id := form.Get("SnapshotId")
	info(r).snapshot = id
	if id == "" {
		return nil, ec2Err(400, "MissingParameter", "The request must contain the parameter SnapshotId")
	}
	if !cas.ValidSnapshotID(id) {
		return nil, ec2Err(400, "InvalidSnapshotID.Malformed", "Invalid id: \"%s\" (expecting \"snap-...\")", id)
	}
	if dryRun {
		return nil, dryRunSucceeded()
	}
	if err := s.store.DeleteSnapshot(r.Context(), s.owner(r), id); err != nil {
		return nil, s.ec2StoreError(r, id, err)
	}
	return ec2Return(r, "DeleteSnapshot"), nil
}

// tagResources returns the snapshot ids a CreateTags/DeleteTags request names.
func tagResources(form url.Values) ([]string, *ec2Error) {
	ids, e := formList(form, "ResourceId")
	if e != nil {
		return nil, e
	}
	if len(ids) == 0 {
		return nil, ec2Err(400, "MissingParameter", "The request must contain the parameter ResourceId")
	}
	for _, id := range ids {
		if !cas.ValidSnapshotID(id) {
			return nil, ec2Err(400, "InvalidID", "The ID '%s' is not valid: ebsd only has snapshots", id)
		}
	}
	return ids, nil
}

func (s *Server) createTags(r *http.Request, form url.Values, dryRun bool) (any, *ec2Error) {
	ids, e := tagResources(form)
	if e != nil {
		return nil, e
	}
	prefixes, e := formStructs(form, "Tag")
	if e != nil {
		return nil, e
	}
	var ch cas.TagChange
	for _, prefix := range prefixes {
		t := cas.Tag{Key: form.Get(prefix + ".Key"), Value: form.Get(prefix + ".Value")}
		switch {
		case t.Key == "":
			return nil, ec2Err(400, "InvalidParameterValue", "Tag key must not be empty")
		case tooLong(t.Key, maxTagKey):
			return nil, ec2Err(400, "InvalidParameterValue", "Tag key exceeds the maximum length of %d characters", maxTagKey)
		case tooLong(t.Value, maxTagValue):
			return nil, ec2Err(400, "InvalidParameterValue", "Tag value exceeds the maximum length of %d characters", maxTagValue)
		case strings.HasPrefix(strings.ToLower(t.Key), "aws:"):
			return nil, ec2Err(400, "InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use")
		}
		ch.Set = append(ch.Set, t)
	}
	if len(ch.Set) == 0 {
		return nil, ec2Err(400, "MissingParameter", "The request must contain the parameter Tag")
	}
	if dryRun {
		return nil, dryRunSucceeded()
	}
	if _, e := s.taggedSnapshots(r, ids); e != nil {
		return nil, e
	}
	for _, id := range ids {
		if err := s.store.ChangeTags(r.Context(), s.owner(r), id, ch); err != nil {
			return nil, s.ec2StoreError(r, id, err)
		}
	}
	return ec2Return(r, "CreateTags"), nil
}

// taggedSnapshots looks up every snapshot a CreateTags/DeleteTags request names before
// any is changed, so that a request naming one it cannot find fails whole instead of
// tagging the others first.
func (s *Server) taggedSnapshots(r *http.Request, ids []string) ([]cas.Snapshot, *ec2Error) {
	snaps := make([]cas.Snapshot, len(ids))
	for i, id := range ids {
		snap, err := s.store.Snapshot(r.Context(), s.owner(r), id)
		if err != nil {
			return nil, s.ec2StoreError(r, id, err)
		}
		snaps[i] = snap
	}
	return snaps, nil
}

func (s *Server) deleteTags(r *http.Request, form url.Values, dryRun bool) (any, *ec2Error) {
	ids, e := tagResources(form)
	if e != nil {
		return nil, e
	}
	prefixes, e := formStructs(form, "Tag")
	if e != nil {
		return nil, e
	}
	var ch cas.TagChange
	for _, prefix := range prefixes {
		_, hasValue := form[prefix+".Value"]
		ch.Remove = append(ch.Remove, cas.TagRemoval{Key: form.Get(prefix + ".Key"), Value: form.Get(prefix + ".Value"), HasValue: hasValue})
	}
	if dryRun {
		return nil, dryRunSucceeded()
	}
	snaps, e := s.taggedSnapshots(r, ids)
	if e != nil {
		return nil, e
	}
	for i, id := range ids {
		snap := snaps[i]
		remove := ch
		if len(ch.Remove) == 0 { // no Tag given: every tag goes
			remove.Remove = nil
			for _, t := range snap.Tags {
				remove.Remove = append(remove.Remove, cas.TagRemoval{Key: t.Key})
			}
		}
		if err := s.store.ChangeTags(r.Context(), s.owner(r), id, remove); err != nil {
			return nil, s.ec2StoreError(r, id, err)
		}
	}
	return ec2Return(r, "DeleteTags"), nil
}
