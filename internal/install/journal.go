package install

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bootlace/bootlace/internal/boundimage"
)

// journal records completed phases on the target, so a re-run after a
// crash or kill knows what it may reuse and what it must redo.
type journal struct {
	path string
	Data journalData
}

type journalData struct {
	Version        int                  `json:"version"`
	ManifestDigest string               `json:"manifest-digest"`
	Phases         map[string]time.Time `json:"phases"`
	// Deployment is what the deploy phase produced, for a re-run that
	// resumes after it.
	Deployment *journalDeployment `json:"deployment,omitempty"`
	// BoundImages are what the bound-images phase stored, for the report
	// of a re-run that resumes after it.
	BoundImages []boundimage.Result `json:"bound-images,omitempty"`
}

type journalDeployment struct {
	Commit string `json:"commit"`
	Dir    string `json:"dir"` // relative to the physical root
	Ref    string `json:"ref"`
}

func openJournal(dir string) (*journal, error) {
	j := &journal{path: filepath.Join(dir, "journal.json")}
	raw, err := os.ReadFile(j.path)
	switch {
	case os.IsNotExist(err):
		j.Data = journalData{Version: 1, Phases: map[string]time.Time{}}
		return j, nil
	case err != nil:
		return nil, fmt.Errorf("reading install journal %s: %w", j.path, err)
	}
	if err := json.Unmarshal(raw, &j.Data); err != nil || j.Data.Phases == nil {
		// A torn journal is treated as empty: every phase is redone.
		j.Data = journalData{Version: 1, Phases: map[string]time.Time{}}
	}
	return j, nil
}

// forImage resets the journal when it belongs to another image.
func (j *journal) forImage(digest string) {
	if j.Data.ManifestDigest != digest {
		j.Data = journalData{Version: 1, ManifestDigest: digest, Phases: map[string]time.Time{}}
	}
}

func (j *journal) done(phase string) bool {
	_, ok := j.Data.Phases[phase]
	return ok
}

func (j *journal) mark(phase string) error {
	j.Data.Phases[phase] = time.Now().UTC()
	return j.save()
}

func (j *journal) unmark(phase string) error {
	delete(j.Data.Phases, phase)
	return j.save()
}

func (j *journal) save() error {
	raw, err := json.MarshalIndent(j.Data, "", "  ")
	if err != nil {
		return err
	}
	tmp := j.path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("writing install journal: %w", err)
	}
	if _, err := f.Write(raw); err != nil {
		f.Close()
		return fmt.Errorf("writing install journal: %w", err)
	}
	// The journal is what makes re-runs safe, so it alone is synced.
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing install journal: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, j.path)
}
