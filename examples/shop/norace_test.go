//go:build !race

package shop_test

// orderCount is how many orders the end-to-end tests place.
const orderCount = 1000
