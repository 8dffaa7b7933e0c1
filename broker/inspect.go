package broker

import (
	"context"
	"errors"
	"time"
)

// Errors of MoveGroup.
var (
	// ErrGroupBusy: the group has live members, and the broker moves a
	// group only while it has none.
	ErrGroupBusy = errors.New("broker: group has live members")
	// ErrGroupExists: a group to be created already exists.
	ErrGroupExists = errors.New("broker: group exists")
	// ErrGroupNotFound: the group does not exist on the topic.
	ErrGroupNotFound = errors.New("broker: group not found")
)

// Inspector is implemented by adapters whose topics and groups Herald's
// operations tools (lag, dead-letter queues, replay, broker metrics) read
// and move through the broker itself. Implementations are safe for
// concurrent use.
type Inspector interface {
	// TopicStates describes the topics the broker holds.
	TopicStates(ctx context.Context) ([]TopicState, error)
	// GroupStates describes the groups that consume topic ("": every
	// topic), including groups of clients that do not use Herald where
	// the broker can tell.
	GroupStates(ctx context.Context, topic string) ([]GroupState, error)
	// ReadTopic calls fn with the messages of topic whose sequence is
	// above after, in sequence order, up to the last one stored when
	// ReadTopic began, until fn returns false. It does not move any group.
	ReadTopic(ctx context.Context, topic string, after uint64, fn func(*StoredMessage) bool) error
	// MoveGroup positions group on topic at to, so that the first message
	// it receives next is the first one at or after to. With create the
	// group must not exist (ErrGroupExists) and is created there; without,
	// it must exist (ErrGroupNotFound) and have no live member
	// (ErrGroupBusy). It returns the sequence the group starts at (0 when
	// the broker cannot tell, or on a topic of several partitions).
	MoveGroup(ctx context.Context, topic, group string, to Start, create bool) (uint64, error)
}

// TopicState is a topic as the broker holds it.
type TopicState struct {
	Topic      string
	Partitions int
	// Messages held and their size (0 when the broker does not tell).
	Messages uint64
	Bytes    uint64
	// FirstSeq and LastSeq bound the sequences held (0 and 0 when empty).
	FirstSeq, LastSeq uint64
	// Retention as configured; zero fields are unlimited.
	Retention TopicConfig
}

// GroupState is how far a group is on one topic.
type GroupState struct {
	Topic string
	Group string
	// Members is the number of live members (subscriptions).
	Members int
	// Pending messages wait for the group; InFlight were delivered and
	// are not settled, where the broker tells them apart (else they count
	// as pending).
	Pending  uint64
	InFlight uint64
	// Foreign is set for a group of a client that does not use Herald.
	Foreign bool
}

// StoredMessage is a message as a topic holds it.
type StoredMessage struct {
	Message
	// Seq is its position (Delivery.Sequence); Time when it was stored.
	Seq  uint64
	Time time.Time
}
