/*
 * device.c - struct queue_device records: releasing what they own.
 *
 * Kept apart from registry.c so that code using the records (the admin API,
 * its fuzz harness) can link without the database pool.
 */
#include <stdlib.h>
#include <string.h>

#include "queue/queue.h"
#include "common/banned.h"

void queue_device_release(struct queue_device *dev)
{
	if (!dev)
		return;
	free(dev->user);
	free(dev->platform);
	free(dev->push_provider);
	free(dev->push_token);
	free(dev->push_app);
	free(dev->push_topic);
	free(dev->push_environment);
	free(dev->push_last_provider);
	free(dev->push_last_outcome);
	free(dev->push_last_reason);
	memset(dev, 0, sizeof(*dev));
}

void queue_device_list_free(struct queue_device *devs, size_t n)
{
	if (!devs)
		return;
	for (size_t i = 0; i < n; i++)
		queue_device_release(&devs[i]);
	free(devs);
}
