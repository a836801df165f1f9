package api

import (
	"strconv"
	"time"

	"github.com/ebsd/ebsd/cas"
)

// epochSeconds marshals a time as a JSON number of seconds since the epoch, the only
// timestamp form the SDKs accept from a restJson1 service.
type epochSeconds time.Time

func (t epochSeconds) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, float64(time.Time(t).UnixMilli())/1000, 'f', -1, 64), nil
}

type tagJSON struct {
	Key   *string `json:"Key,omitempty"`
	Value *string `json:"Value,omitempty"`
}

type snapshotJSON struct {
	SnapshotID       string       `json:"SnapshotId"`
	OwnerID          string       `json:"OwnerId"`
	Status           cas.Status   `json:"Status"`
	StartTime        epochSeconds `json:"StartTime"`
	VolumeSize       int64        `json:"VolumeSize"`
	BlockSize        int          `json:"BlockSize"`
	Description      string       `json:"Description,omitempty"`
	Tags             []tagJSON    `json:"Tags,omitempty"`
	ParentSnapshotID string       `json:"ParentSnapshotId,omitempty"`
	KmsKeyArn        string       `json:"KmsKeyArn,omitempty"`
	SseType          string       `json:"SseType,omitempty"`
}

func toSnapshotJSON(s cas.Snapshot) snapshotJSON {
	out := snapshotJSON{
		SnapshotID:       s.ID,
		OwnerID:          s.OwnerID,
		Status:           s.Status,
		StartTime:        epochSeconds(s.StartTime),
		VolumeSize:       s.VolumeSize,
		BlockSize:        cas.BlockSize,
		Description:      s.Description,
		ParentSnapshotID: s.ParentID,
		KmsKeyArn:        s.KmsKeyArn,
		SseType:          "none",
	}
	for _, t := range s.Tags {
		out.Tags = append(out.Tags, tagJSON{Key: &t.Key, Value: &t.Value})
	}
	return out
}
