"""From pixels to keypoints and back: video decoding, 2D detectors, keypoint layouts, root trajectory, renders."""
