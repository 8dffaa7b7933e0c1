package shop

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/consumer"
)

// ErrSMSGateway is the failure the SMS notifier produces on purpose.
var ErrSMSGateway = errors.New("sms gateway refused the message (demo failure)")

// Channels are the notification channels, each its own consumer group.
var Channels = []string{"email", "sms", "push"}

// Notified counts the notifications sent, by channel.
type Notified struct {
	Email, SMS, Push atomic.Int64
}

// RunNotifications runs the notifiers until ctx ends: e-mail, SMS and push
// are separate consumer groups (notify-email, notify-sms, notify-push) on
// the orders topic, each telling the customer that an order shipped or was
// cancelled. The SMS notifier fails the first delivery of one order in
// Tuning.SMSFailEvery, after its retries too, so those events go to the
// dead-letter queue shop.orders.dlq; redriven, they succeed. n, if not
// nil, counts what was sent.
func RunNotifications(ctx context.Context, env Env, n *Notified) error {
	env, err := env.check("notifications")
	if err != nil {
		return err
	}
	if n == nil {
		n = &Notified{}
	}
	types, err := Register(ctx, env.Registry)
	if err != nil {
		return err
	}
	u := &unit{env: env}
	var runs []func(context.Context) error
	for _, ch := range Channels {
		r, err := u.router("notify-"+ch, []string{TopicOrders},
			consumer.WithRetry(consumer.RetryPolicy{MaxAttempts: 3, Backoff: consumer.Backoff{Initial: 200 * time.Millisecond, Max: time.Second, Multiplier: 2}}))
		if err != nil {
			return err
		}
		count := map[string]*atomic.Int64{"email": &n.Email, "sms": &n.SMS, "push": &n.Push}[ch]
		send := func(orderID string, m *consumer.Message) error {
			if ch == "sms" && env.Tuning.SMSFailEvery > 0 && m.Raw.Header[consumer.HeaderRedrives] == "" &&
				chance(env.Tuning.Seed, "sms", orderID, 1/float64(env.Tuning.SMSFailEvery)) {
				return fmt.Errorf("notify order %s: %w", orderID, ErrSMSGateway)
			}
			count.Add(1)
			return nil
		}
		herald.Handle(r, types.OrderShipped, func(ctx context.Context, o OrderShipped, m *consumer.Message) error { return send(o.OrderID, m) })
		herald.Handle(r, types.OrderCancelled, func(ctx context.Context, o OrderCancelled, m *consumer.Message) error { return send(o.OrderID, m) })
		runs = append(runs, r.Run)
	}
	return runAll(ctx, runs...)
}
