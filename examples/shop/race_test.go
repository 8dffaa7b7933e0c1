//go:build race

package shop_test

// orderCount is smaller under the race detector, which slows the five
// services ten times over; the full 1,000 run without it.
const orderCount = 200
